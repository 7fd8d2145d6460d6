"""ASGI entry point: Django for HTTP, the dashboard's websocket through Channels.

Development: ``manage.py runserver`` (daphne). Production: ``daphne -b 0.0.0.0 -p 8000
seedcore_site.asgi:application`` behind a proxy that forwards websocket upgrades; run as many
replicas as you like (each feeds its own websockets from PostgreSQL). The dashboard's few
static files (htmx, one script, one stylesheet) are served by this application itself, so no
CDN, build step or separate file server is needed; a proxy may serve ``collectstatic``'s
STATIC_ROOT instead.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedcore_site.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
