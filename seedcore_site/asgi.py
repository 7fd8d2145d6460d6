"""ASGI entry point: Django for HTTP, the dashboard's websocket through Channels.

Development: ``manage.py runserver`` (daphne). Production: ``daphne -b 0.0.0.0 -p 8000
seedcore_site.asgi:application`` behind a proxy that forwards websocket upgrades; run as many
replicas as you like (each feeds its own websockets from PostgreSQL). The dashboard's few
static files (htmx, one script, one stylesheet) are served by this application itself, so no
CDN, build step or separate file server is needed; a proxy may serve ``collectstatic``'s
STATIC_ROOT instead.

A path outside the static files (``/static/..%2f..``) answers 404, and a websocket to a path
no consumer serves is refused (404 where the server lets an application answer a handshake
with HTTP, as uvicorn does; daphne can only say 403), never a 500 with a logged traceback.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedcore_site.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.http import Http404  # noqa: E402
from django.urls import re_path  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's handler, with a path that leaves the static directories a 404 (Django's
    raises SuspiciousFileOperation, which escapes it as a 500)."""

    def serve(self, request):
        try:
            return super().serve(request)
        except SuspiciousOperation:
            raise Http404("no such static file") from None


async def websocket_not_found(scope, receive, send) -> None:
    """The last websocket route: any path no consumer serves."""
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"Not Found"})
    else:
        await send({"type": "websocket.close"})


application = ProtocolTypeRouter(
    {
        "http": StaticFilesHandler(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter([*websocket_urlpatterns, re_path(r"", websocket_not_found)])
            )
        ),
    }
)
