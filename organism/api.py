"""The organism endpoints and the health probes: PostgreSQL only, never Ray.

What they show of the Coordinator is what ``rundispatcher`` publishes (``organism.status``);
organism control travels through the queue as control tasks (``organism.control``). So the web
process keeps answering when Ray restarts, and its replicas cost Ray nothing. The probes
(/healthz, /readyz, /coordinator/health) are public; /coordinator/health tells strangers its
status only, and readers (the session of a user who may read, or an API token) the details.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, ValidationError

from organism import status
from organism.control import run_control
from organism.handlers import get_handler
from tasks.api import AUTH_ERRORS, Message, api_actor
from tasks.auth import admin_auth, token_scope
from tasks.permissions import READ, user_may
from tasks.selectors import list_dispatchers, pending_migrations
from tasks.validation import TaskFields

logger = logging.getLogger("seedcore.api")

router = Router(tags=["organism"])
probes = Router(tags=["health"])

# A refused request (400), a control task that failed (502), no dispatcher took it or nothing
# published (503), or no answer in time (504); and the errors every authenticated endpoint may
# give.
COORDINATOR_ERRORS = {**AUTH_ERRORS, 400: Message, 502: Message, 503: Message, 504: Message}


class DispatcherHealth(Schema):
    name: str
    last_beat_at: datetime
    alive: bool
    in_flight: int
    processed: int
    circuit: Literal["closed", "open", "half_open", "unknown"] = Field(
        "closed", description="The dispatcher's circuit breaker; not closed = claiming nothing"
    )


HealthStatus = Literal["healthy", "degraded", "unhealthy"]
CIRCUITS = ("closed", "open", "half_open")


class PublicHealth(Schema):
    """What /coordinator/health tells a caller without credentials."""

    model_config = ConfigDict(extra="forbid")

    status: HealthStatus


class CoordinatorHealth(Schema):
    status: HealthStatus
    ping_ms: float | None
    reported_seconds_ago: float | None = Field(
        description="How long ago rundispatcher last reported the Coordinator; null if never."
    )
    dispatchers: list[DispatcherHealth]
    message: str


class Readiness(Schema):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="Each check's result: 'ok' or what failed.")
    detail: str


class Liveness(Schema):
    status: Literal["ok"]


class TaskSpec(TaskFields):
    """A task to run at once on an organ, outside the queue. Unknown fields are refused."""


# ---------------------------------------------------------------------------------------------
# Probes


def judge_health(coordinator: dict[str, Any], dispatchers: list[dict[str, Any]]) -> tuple:
    """(HTTP status, body) of /coordinator/health for a coordinator view (organism.status)
    and the dispatchers' heartbeats."""
    body = {
        "ping_ms": coordinator["ping_ms"],
        "reported_seconds_ago": coordinator["age"],
        "dispatchers": dispatchers,
    }
    if not coordinator["healthy"]:
        return 503, {**body, "status": "unhealthy", "message": coordinator["error"]}
    alive = sum(1 for d in dispatchers if d["alive"])
    if alive == 0:
        message = (
            "the Coordinator answers but no dispatcher has beaten in "
            f"{settings.SEEDCORE_HEARTBEAT_TIMEOUT:g} s; start one with "
            "`python manage.py rundispatcher`"
        )
        return 200, {**body, "status": "degraded", "message": message}
    if alive < len(dispatchers):
        message = f"{len(dispatchers) - alive} of {len(dispatchers)} dispatchers are silent"
        return 200, {**body, "status": "degraded", "message": message}
    message = f"the Coordinator answers; {alive} dispatcher(s) alive"
    return 200, {**body, "status": "healthy", "message": message}


def _coordinator_health() -> tuple:
    coordinator = status.coordinator_view(status.read())
    dispatchers = list_dispatchers()
    for row in dispatchers:
        # A heartbeat row is written by any process with database access: a circuit value
        # this version does not know is shown as such, never a 500.
        if row.get("circuit") not in CIRCUITS:
            row["circuit"] = "unknown"
    return judge_health(coordinator, dispatchers)


def sees_details(request: HttpRequest) -> bool:
    """The session of a user who may read, or a live API token whose owner still may: details."""
    if user_may(getattr(request, "user", None), READ):
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or "\x00" in token:
        return False
    try:
        return token_scope(token) is not None
    except DatabaseError:
        logger.exception("coordinator health: cannot check the API token")
        return False


UNKNOWN_HEALTH = {
    "status": "unhealthy",
    "ping_ms": None,
    "reported_seconds_ago": None,
    "dispatchers": [],
    "message": "the database does not answer, so the Coordinator's health is unknown",
}


@probes.get(
    "/coordinator/health",
    auth=None,
    response={
        200: CoordinatorHealth | PublicHealth,
        503: CoordinatorHealth | PublicHealth,
    },
    summary="The Coordinator as rundispatcher last reported it, and the dispatchers' heartbeats",
    description="Without credentials: the status only. A reader's session or an API token also "
    "gets the ping, the report's age, the dispatchers and the message.",
)
def coordinator_health(request: HttpRequest):
    try:
        code, body = _coordinator_health()
        body = CoordinatorHealth.model_validate(body).model_dump()
    except DatabaseError:
        logger.exception("coordinator health: cannot read the database")
        code, body = 503, UNKNOWN_HEALTH
    except ValidationError:
        logger.exception("coordinator health: a published value does not fit the schema")
        code, body = 503, {**UNKNOWN_HEALTH, "message": "the published health is malformed"}
    if not sees_details(request):
        body = {"status": body["status"]}
    return Status(code, body)


def _check_database() -> list[tuple[str, str]]:
    """The database and migrations checks, as (name, result) pairs."""
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        logger.exception("readyz: the database does not answer")
        return [("database", "the database does not answer"), ("migrations", "not checked")]
    try:
        pending = pending_migrations()
    except Exception:
        logger.exception("readyz: cannot read the migration state")
        return [("database", "ok"), ("migrations", "cannot read the migration state")]
    if pending:
        return [
            ("database", "ok"),
            ("migrations", f"{pending} pending; run `python manage.py migrate`"),
        ]
    return [("database", "ok"), ("migrations", "ok")]


@probes.get(
    "/readyz",
    auth=None,
    response={200: Readiness, 503: Readiness},
    summary="Ready to serve: database, migrations and the Coordinator (as last reported)",
)
def readyz(request: HttpRequest):
    checks = dict(_check_database())
    if checks["database"] == "ok":
        coordinator = status.coordinator_view(status.read())
        checks["coordinator"] = "ok" if coordinator["healthy"] else coordinator["error"]
    else:
        checks["coordinator"] = "not checked"
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        detail = "not ready: " + "; ".join(f"{name}: {checks[name]}" for name in failed)
        return Status(503, {"status": "not ready", "checks": checks, "detail": detail})
    return Status(200, {"status": "ready", "checks": checks, "detail": "ready"})


@probes.get("/healthz", auth=None, response=Liveness, summary="The process serves")
def healthz(request: HttpRequest):
    return {"status": "ok"}


# ---------------------------------------------------------------------------------------------
# The organism: read as published, controlled through the queue


def published_summary() -> dict[str, Any]:
    """The organism summary rundispatcher last published; 503 when there is none to trust."""
    coordinator = status.coordinator_view(status.read())
    if not coordinator["healthy"] or coordinator["summary"] is None:
        reason = coordinator["error"] or "the organism has not been reported yet"
        raise HttpError(503, reason)
    return coordinator["summary"]


def _known_organ(organ_id: str) -> None:
    organs = [organ["organ_id"] for organ in published_summary().get("organs", [])]
    if organ_id not in organs:
        raise HttpError(400, f"no organ {organ_id!r}; the organs are {', '.join(organs)}")


def _runs_on_an_organ(task: TaskSpec) -> dict[str, Any]:
    spec = get_handler(task.type)
    if spec is not None and spec.control:
        raise HttpError(400, f"control type '{task.type}' cannot run on an organ")
    return task.model_dump()


@router.get(
    "/organism/status", response={200: Any, **COORDINATOR_ERRORS}, summary="Each organ's status"
)
def organism_status(request: HttpRequest):
    return published_summary().get("organs", [])


@router.get(
    "/organism/summary",
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Organs, agents and load",
)
def organism_summary(request: HttpRequest):
    return published_summary()


@router.post(
    "/organism/organs/{organ_id}/execute",
    auth=admin_auth,
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Run a task at once on one organ",
)
def execute_on_organ(request: HttpRequest, organ_id: str, task: TaskSpec):
    _known_organ(organ_id)
    return run_control(
        "execute_on_organ",
        {"organ_id": organ_id, "task": _runs_on_an_organ(task)},
        actor=api_actor(request),
    )


@router.post(
    "/organism/execute-random",
    auth=admin_auth,
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Run a task at once on a random organ",
)
def execute_on_random_organ(request: HttpRequest, task: TaskSpec):
    return run_control(
        "execute_on_random_organ", {"task": _runs_on_an_organ(task)}, actor=api_actor(request)
    )


@router.post(
    "/organism/initialize",
    auth=admin_auth,
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Bring the organism up",
)
def initialize_organism(request: HttpRequest):
    return run_control("initialize_organism", actor=api_actor(request))


@router.post(
    "/organism/shutdown",
    auth=admin_auth,
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Stop organs and agents",
)
def shutdown_organism(request: HttpRequest):
    return run_control("shutdown_organism", actor=api_actor(request))
