"""The schedules endpoints: list them; Run now, Pause and Resume one. Thin over
``tasks.schedules`` (every change) and ``tasks.selectors`` (the listing); schedules are made
and edited in the admin."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from django.http import HttpRequest
from ninja import Path, Router, Schema

from tasks import operations, schedules, selectors
from tasks.api import AUTH_ERRORS, Message, api_actor
from tasks.auth import operate_auth

router = Router(tags=["schedules"])

# A schedule's ID: a PostgreSQL bigint, so a larger number is a 422, never a database error.
ScheduleId = Annotated[int, Path(ge=1, le=schedules.MAX_ID)]
ONE_ERRORS = {**AUTH_ERRORS, 404: Message}


class ScheduleOut(Schema):
    id: int
    name: str
    type: str
    cron: str
    interval_seconds: int | None
    timezone: str
    enabled: bool
    catch_up: str
    priority: int
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: UUID | None


class ScheduleSummary(ScheduleOut):
    last_task_status: str | None


class RunOut(Schema):
    task_id: UUID


@router.get("/schedules", response={200: list[ScheduleSummary], **AUTH_ERRORS})
def list_schedules(request: HttpRequest):
    """Every schedule with its next and last run and its last task's status."""
    return selectors.list_schedules()


@router.post(
    "/schedules/{schedule_id}/run",
    auth=operate_auth,
    response={200: RunOut, **ONE_ERRORS},
    summary="Enqueue a schedule's task now (its slots stay as they are)",
)
def run_schedule(request: HttpRequest, schedule_id: ScheduleId):
    return {"task_id": operations.run_schedule_now(schedule_id, api_actor(request))}


@router.post(
    "/schedules/{schedule_id}/pause",
    auth=operate_auth,
    response={200: ScheduleOut, **ONE_ERRORS},
    summary="Pause a schedule",
)
def pause_schedule(request: HttpRequest, schedule_id: ScheduleId):
    return operations.pause_schedule(schedule_id, api_actor(request))


@router.post(
    "/schedules/{schedule_id}/resume",
    auth=operate_auth,
    response={200: ScheduleOut, **ONE_ERRORS},
    summary="Resume a schedule from its first slot after now",
)
def resume_schedule(request: HttpRequest, schedule_id: ScheduleId):
    return operations.resume_schedule(schedule_id, api_actor(request))
