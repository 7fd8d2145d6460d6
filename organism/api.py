"""The organism endpoints (proxies to the Coordinator) and the health probes.

Every call goes through ``organism.client``: awaited, bounded by a timeout, and turned into
a 503 naming ``rundispatcher`` when Ray or the Coordinator is out of reach. The probes
(/healthz, /readyz, /coordinator/health) are public and reveal status only.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from pydantic import ConfigDict, field_validator

from organism import client
from organism.client import CoordinatorUnavailable
from tasks.api import (
    AUTH_ERRORS,
    MAX_DESCRIPTION_LENGTH,
    MAX_DOMAIN_LENGTH,
    MAX_PARAMS_BYTES,
    MAX_TYPE_LENGTH,
    NO_NUL,
    Message,
    check_params,
)
from tasks.selectors import list_dispatchers

logger = logging.getLogger("seedcore.api")

# A dispatcher beats every few seconds; one silent for longer than this is taken for dead.
DISPATCHER_ALIVE_SECONDS = 15.0

router = Router(tags=["organism"])
probes = Router(tags=["health"])

# A handler's refusal (400) or failure (502), Ray or the Coordinator out of reach (503), or
# no answer in time (504); and the errors every authenticated endpoint may give.
COORDINATOR_ERRORS = {**AUTH_ERRORS, 400: Message, 502: Message, 503: Message, 504: Message}


class DispatcherHealth(Schema):
    name: str
    last_beat_at: datetime
    alive: bool
    in_flight: int
    processed: int
    circuit: Literal["closed", "open", "half_open"] = Field(
        "closed", description="The dispatcher's circuit breaker; not closed = claiming nothing"
    )


class CoordinatorHealth(Schema):
    status: Literal["healthy", "degraded", "unhealthy"]
    ping_ms: float | None
    dispatchers: list[DispatcherHealth]
    message: str


class Readiness(Schema):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="Each check's result: 'ok' or what failed.")
    detail: str


class Liveness(Schema):
    status: Literal["ok"]


class TaskSpec(Schema):
    """A task to run at once on an organ, outside the queue. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=MAX_TYPE_LENGTH, pattern=NO_NUL, strict=True)
    params: dict[str, Any] = Field(
        default_factory=dict, description=f"A JSON object, at most {MAX_PARAMS_BYTES} bytes."
    )
    description: str | None = Field(
        None, max_length=MAX_DESCRIPTION_LENGTH, pattern=NO_NUL, strict=True
    )
    domain: str | None = Field(None, max_length=MAX_DOMAIN_LENGTH, pattern=NO_NUL, strict=True)
    drift_score: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False, strict=True)

    @field_validator("params")
    @classmethod
    def params_fit(cls, params: dict[str, Any]) -> dict[str, Any]:
        return check_params(params)


# ---------------------------------------------------------------------------------------------
# Probes


def _dispatcher_health(now: datetime) -> list[dict[str, Any]]:
    horizon = now - timedelta(seconds=DISPATCHER_ALIVE_SECONDS)
    return [{**row, "alive": row["last_beat_at"] >= horizon} for row in list_dispatchers()]


@probes.get(
    "/coordinator/health",
    auth=None,
    response={200: CoordinatorHealth, 503: CoordinatorHealth},
    summary="The Coordinator's ping and the dispatchers' heartbeats",
)
async def coordinator_health(request: HttpRequest):
    try:
        dispatchers = await sync_to_async(_dispatcher_health)(timezone.now())
    except DatabaseError:
        logger.exception("coordinator health: cannot read the dispatchers' heartbeats")
        message = "the database does not answer, so the dispatchers' heartbeats are unknown"
        body = {"status": "unhealthy", "ping_ms": None, "dispatchers": [], "message": message}
        return Status(503, body)
    alive = sum(1 for d in dispatchers if d["alive"])
    try:
        ping_ms = await client.ping()
    except CoordinatorUnavailable as exc:
        body = {"status": "unhealthy", "ping_ms": None, "dispatchers": dispatchers}
        return Status(503, {**body, "message": str(exc)})
    if alive == 0:
        status = "degraded"
        message = (
            f"the Coordinator answers but no dispatcher has beaten in {DISPATCHER_ALIVE_SECONDS:g}"
            " s; start one with `python manage.py rundispatcher`"
        )
    elif alive < len(dispatchers):
        status = "degraded"
        message = f"{len(dispatchers) - alive} of {len(dispatchers)} dispatchers are silent"
    else:
        status, message = "healthy", f"the Coordinator answers; {alive} dispatcher(s) alive"
    return Status(
        200,
        {
            "status": status,
            "ping_ms": round(ping_ms, 3),
            "dispatchers": dispatchers,
            "message": message,
        },
    )


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
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception:
        logger.exception("readyz: cannot read the migration state")
        return [("database", "ok"), ("migrations", "cannot read the migration state")]
    if pending:
        return [
            ("database", "ok"),
            ("migrations", f"{len(pending)} pending; run `python manage.py migrate`"),
        ]
    return [("database", "ok"), ("migrations", "ok")]


@probes.get(
    "/readyz",
    auth=None,
    response={200: Readiness, 503: Readiness},
    summary="Ready to serve: database, migrations, Ray and the Coordinator",
)
async def readyz(request: HttpRequest):
    checks = dict(await sync_to_async(_check_database)())
    try:
        await client.connect()
        checks["ray"] = "ok"
    except CoordinatorUnavailable:
        checks["ray"] = "Ray cannot be reached; start it with `python manage.py rundispatcher`"
        checks["coordinator"] = "not checked"
    else:
        try:
            await client.ping()
            checks["coordinator"] = "ok"
        except CoordinatorUnavailable:
            checks["coordinator"] = (
                "the Coordinator does not answer ping; "
                "start it with `python manage.py rundispatcher`"
            )
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        detail = "not ready: " + "; ".join(f"{name}: {checks[name]}" for name in failed)
        return Status(503, {"status": "not ready", "checks": checks, "detail": detail})
    return Status(200, {"status": "ready", "checks": checks, "detail": "ready"})


@probes.get("/healthz", auth=None, response=Liveness, summary="The process serves")
def healthz(request: HttpRequest):
    return {"status": "ok"}


# ---------------------------------------------------------------------------------------------
# Organism control, through the Coordinator


@router.get(
    "/organism/status", response={200: Any, **COORDINATOR_ERRORS}, summary="Each organ's status"
)
async def organism_status(request: HttpRequest):
    return await client.call("get_organism_status")


@router.get(
    "/organism/summary",
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Organs, agents and load",
)
async def organism_summary(request: HttpRequest):
    return await client.call("get_organism_summary")


@router.post(
    "/organism/organs/{organ_id}/execute",
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Run a task at once on one organ",
)
async def execute_on_organ(request: HttpRequest, organ_id: str, task: TaskSpec):
    params = {"organ_id": organ_id, "task": task.dict()}
    return await client.call("execute_on_organ", params)


@router.post(
    "/organism/execute-random",
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Run a task at once on a random organ",
)
async def execute_on_random_organ(request: HttpRequest, task: TaskSpec):
    return await client.call("execute_on_random_organ", {"task": task.dict()})


@router.post(
    "/organism/initialize",
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Bring the organism up",
)
async def initialize_organism(request: HttpRequest):
    return await client.call("initialize_organism")


@router.post(
    "/organism/shutdown",
    response={200: Any, **COORDINATOR_ERRORS},
    summary="Stop organs and agents",
)
async def shutdown_organism(request: HttpRequest):
    return await client.call("shutdown_organism")
