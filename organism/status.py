"""The Coordinator's health and the organism, published by ``rundispatcher`` for the web.

The supervisor pings the Coordinator and asks it for the organism summary every tick
(SEEDCORE_SUPERVISE_SECONDS) and :func:`publish`es what it saw into ``coordinator_status``,
with a NOTIFY on ``seedcore_health`` when something an operator would notice changed. The web
process (health probes, dashboard, organism API) only :func:`read`s that row: it never talks to
Ray, so it keeps answering when Ray restarts, and any number of web replicas cost Ray nothing.

A publication older than :func:`stale_after` means ``rundispatcher`` is gone (killed, or its
machine lost): :func:`coordinator_view` then says the Coordinator is unavailable, and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F
from django.db.models.functions import Now

from organism.models import CoordinatorStatus

HEALTH_CHANNEL = "seedcore_health"
START_HINT = "start it with `python manage.py rundispatcher`"
# Ping differences below this are noise to an operator, not news worth a NOTIFY.
PING_NEWS_MS = 20.0


@dataclass(frozen=True)
class Publication:
    namespace: str
    published_at: datetime
    age_seconds: float  # by the database's clock, as the publisher stamped it
    ping_ms: float | None
    error: str | None
    summary: dict[str, Any] | None


def stale_after() -> float:
    """Seconds without a publication after which ``rundispatcher`` is taken for gone: three
    missed ticks, and never less than 10 s (a tick can wait on a slow reap)."""
    return max(10.0, 3 * settings.SEEDCORE_SUPERVISE_SECONDS)


def publish(
    *,
    namespace: str,
    ping_ms: float | None,
    error: str | None,
    summary: dict[str, Any] | None,
    using: str = DEFAULT_DB_ALIAS,
) -> bool:
    """Record what the supervisor saw; returns whether it was news (and so announced).

    ``summary=None`` keeps the previous summary (the Coordinator answered ping but not the
    summary in time, say), so a page does not lose the organism over one slow tick.
    """
    with transaction.atomic(using=using):
        rows = CoordinatorStatus.objects.using(using).select_for_update()
        previous = rows.filter(namespace=namespace).first()
        if summary is None and previous is not None and error is None:
            summary = previous.summary
        if ping_ms is not None:
            ping_ms = round(ping_ms, 3)  # microseconds: finer is noise
        values = {"ping_ms": ping_ms, "error": error, "summary": summary, "published_at": Now()}
        CoordinatorStatus.objects.using(using).update_or_create(
            namespace=namespace, defaults=values
        )
        news = previous is None or _meaning(previous.ping_ms, previous.error, previous.summary) != (
            _meaning(ping_ms, error, summary)
        )
        if news:
            with connections[using].cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [HEALTH_CHANNEL, namespace])
    return news


def _meaning(ping_ms: float | None, error: str | None, summary: Any) -> tuple:
    return None if ping_ms is None else round(ping_ms / PING_NEWS_MS), error, summary


def read(namespace: str | None = None, *, using: str = DEFAULT_DB_ALIAS) -> Publication | None:
    """The latest publication for ``namespace`` (default: settings.RAY_NAMESPACE), or None."""
    row = _query(namespace, using).first()
    return _publication(row) if row is not None else None


async def aread(
    namespace: str | None = None, *, using: str = DEFAULT_DB_ALIAS
) -> Publication | None:
    """:func:`read`, for async views and consumers."""
    row = await _query(namespace, using).afirst()
    return _publication(row) if row is not None else None


def _query(namespace: str | None, using: str):
    return (
        CoordinatorStatus.objects.using(using)
        .filter(namespace=namespace or settings.RAY_NAMESPACE)
        .annotate(age=Now() - F("published_at"))
    )


def _publication(row: CoordinatorStatus) -> Publication:
    return Publication(
        namespace=row.namespace,
        published_at=row.published_at,
        age_seconds=max(0.0, row.age.total_seconds()),
        ping_ms=row.ping_ms,
        error=row.error,
        summary=row.summary,
    )


def coordinator_view(
    publication: Publication | None, *, stale_seconds: float | None = None
) -> dict[str, Any]:
    """What pages and probes show of the Coordinator: ``healthy``, ``ping_ms``, ``error``
    (why it is not healthy, saying what to do), ``summary`` and ``age_seconds``."""
    stale_seconds = stale_after() if stale_seconds is None else stale_seconds
    if publication is None:
        error = f"rundispatcher has never reported on this database; {START_HINT}"
        return {"healthy": False, "ping_ms": None, "error": error, "summary": None, "age": None}
    age = round(publication.age_seconds, 1)
    view = {"ping_ms": publication.ping_ms, "summary": publication.summary, "age": age}
    if age > stale_seconds:
        error = f"no word from rundispatcher for {age:.0f} s; {START_HINT}"
        return {**view, "healthy": False, "ping_ms": None, "error": error}
    if publication.error is not None:
        return {**view, "healthy": False, "error": publication.error}
    return {**view, "healthy": True, "error": None}
