"""``/metrics``: the Prometheus text exposition (see :mod:`organism.metrics`).

Open when SEEDCORE_METRICS_PUBLIC is set; otherwise it takes the API's credentials, a bearer
token or the session of a user who may read (``tasks.permissions``). It reads the database only
(the Coordinator's ping as rundispatcher last published it), in a thread.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from organism import metrics

logger = logging.getLogger("seedcore.metrics")


def _authorised(request: HttpRequest) -> bool:
    from tasks.auth import token_scope
    from tasks.permissions import READ, user_may

    if settings.SEEDCORE_METRICS_PUBLIC:
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token_scope(token.strip()) is not None
    return user_may(request.user, READ)


@require_GET
async def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    if not await sync_to_async(_authorised)(request):
        response = HttpResponse(
            "metrics need a bearer token (python manage.py createapitoken USERNAME) or the "
            "session of a user who may read; or set SEEDCORE_METRICS_PUBLIC=1\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = "Bearer"
        return response
    try:
        snapshot = await metrics.collect()
    except DatabaseError:
        logger.exception("metrics: cannot read the database")
        return HttpResponse(
            "the database does not answer\n", status=503, content_type="text/plain; charset=utf-8"
        )
    body = metrics.render(snapshot)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
