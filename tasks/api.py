"""The tasks endpoints: submit, list, read, run now, cancel; and the queue's controls (pause,
resume, concurrency limits).

Thin over ``tasks.queue`` (every status change) and ``tasks.selectors`` (every read). Errors
are raised as the engine's exceptions and turned into JSON by ``seedcore_site.api``. A
submitted task is checked by ``tasks.validation``'s rules (its limits are in the OpenAPI
schema too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import ConfigDict

from tasks import models, permissions, queue, selectors
from tasks.auth import operate_auth, require_scope
from tasks.ids import parse_id_prefix
from tasks.validation import NO_NUL, ConcurrencyLimit, IsoDatetime, NewTask, QueueType

Text = Annotated[str, Field(pattern=NO_NUL)]
# What tasks.ids accepts: 4 to 32 hex digits, dashes anywhere. Documented, not enforced here,
# so a malformed ID gets the resolver's 400 rather than a generic 422.
ID_PATTERN = r"^-*([0-9a-fA-F]-*){4,32}$"
TaskIdText = Annotated[
    str,
    Field(
        description="A task UUID or a prefix of at least 4 hex digits.",
        json_schema_extra={"pattern": ID_PATTERN},
    ),
]
StatusName = Literal[tuple(models.Status.values)]

router = Router(tags=["tasks"])


class Message(Schema):
    detail: str


class FieldError(Schema):
    field: str
    message: str


class InvalidInput(Schema):
    detail: str
    errors: list[FieldError]


class AmbiguousId(Schema):
    detail: str
    candidates: list[str]


class Conflict(Schema):
    detail: str
    status: str


class TaskIn(NewTask):
    """A task to queue. Unknown fields are refused."""


class TaskSummary(Schema):
    id: UUID
    status: str
    type: str
    domain: str | None
    description: str | None
    attempts: int
    priority: int
    drift_score: float
    run_after: datetime | None
    locked_by: str | None
    created_at: datetime
    updated_at: datetime
    error: str | None


class TaskOut(TaskSummary):
    params: Any
    result: Any
    error_history: Any
    max_attempts: int | None
    locked_at: datetime | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    waiting: str | None = Field(
        None, description="Why a QUEUED or RETRY task is not running yet; null otherwise."
    )


class TaskPage(Schema):
    items: list[TaskSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class TaskStatus(Schema):
    id: UUID
    status: str
    attempts: int
    updated_at: datetime
    error: str | None


class TaskFilters(Schema):
    status: StatusName | None = None
    type: Text | None = None
    domain: Text | None = None
    created_after: IsoDatetime | None = Field(None, description="Created at or after.")
    created_before: IsoDatetime | None = Field(None, description="Created before.")
    id: TaskIdText | None = None
    cursor: Text | None = Field(None, description="The `next_cursor` of the previous page.")
    limit: int = Field(50, ge=1, le=selectors.MAX_PAGE)


# The error answers every endpoint may give (seedcore_site/api.py makes them): no or bad
# credentials, a staff session's unsafe request without CSRF, and an invalid request.
AUTH_ERRORS = {401: Message, 403: Message, 422: InvalidInput}
ID_ERRORS = {**AUTH_ERRORS, 400: Message, 404: Message, 409: AmbiguousId}
ACTION_ERRORS = {**ID_ERRORS, 409: AmbiguousId | Conflict}


@router.post(
    "/tasks",
    auth=operate_auth,
    response={201: TaskOut, 400: Message, **AUTH_ERRORS},
    summary="Queue a task (an organism control type needs the admin scope)",
)
def submit_task(request: HttpRequest, body: TaskIn):
    require_scope(request, permissions.scope_to_submit(body.type))
    return Status(201, queue.enqueue(**body.model_dump()))


@router.get(
    "/tasks",
    response={200: TaskPage, 400: Message, **AUTH_ERRORS},
    summary="List tasks, newest first",
)
def list_tasks(request: HttpRequest, filters: Query[TaskFilters]):
    if filters.id is not None:
        parse_id_prefix(filters.id)  # an empty ?id= is a malformed ID, not "no filter"
    page = selectors.list_tasks(
        selectors.TaskFilter(
            status=filters.status,
            type=filters.type,
            domain=filters.domain,
            created_after=filters.created_after,
            created_before=filters.created_before,
            id_prefix=filters.id,
        ),
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/tasks/{task_id}", response={200: TaskOut, **ID_ERRORS}, summary="One task")
def get_task(request: HttpRequest, task_id: TaskIdText):
    task = selectors.get_task(selectors.resolve_id(task_id))
    return {**task, "waiting": selectors.waiting_reason(task)}


@router.get(
    "/tasks/{task_id}/status", response={200: TaskStatus, **ID_ERRORS}, summary="A task's status"
)
def get_task_status(request: HttpRequest, task_id: TaskIdText):
    return selectors.get_task(selectors.resolve_id(task_id))


@router.post(
    "/tasks/{task_id}/run",
    auth=operate_auth,
    response={200: TaskOut, **ACTION_ERRORS},
    summary="Queue a FAILED, CANCELLED or RETRY task to run now",
)
def run_task(request: HttpRequest, task_id: TaskIdText):
    return queue.run_now(selectors.resolve_id(task_id))


@router.post(
    "/tasks/{task_id}/cancel",
    auth=operate_auth,
    response={200: TaskOut, **ACTION_ERRORS},
    summary="Cancel a task (a RUNNING one ends CANCELLED when its attempt stops)",
)
def cancel_task(request: HttpRequest, task_id: TaskIdText):
    return queue.cancel(selectors.resolve_id(task_id))


# ---------------------------------------------------------------------------------------------
# The queue's controls


class QueueTypeIn(Schema):
    """Which type to pause or resume; no ``type`` (``{}``) means every type."""

    model_config = ConfigDict(extra="forbid")

    type: QueueType | None = Field(None, description="A task type; leave out for every type.")


class QueueLimitIn(Schema):
    model_config = ConfigDict(extra="forbid")

    type: QueueType
    limit: ConcurrencyLimit | None = Field(
        description="Tasks of the type that may run at once; null clears the override."
    )


class QueueTypeOut(Schema):
    type: str
    paused: bool
    paused_at: datetime | None
    concurrency_limit: int | None = Field(description="The operator's override.")
    declared_concurrency: int | None = Field(description="What the handler declares in code.")
    limit: int | None = Field(description="The limit that holds: the override, else declared.")
    running: int


class QueueOut(Schema):
    all_paused: bool
    all_paused_at: datetime | None
    types: list[QueueTypeOut]


@router.get("/queue", response={200: QueueOut, **AUTH_ERRORS}, summary="What is paused and capped")
def get_queue(request: HttpRequest):
    return selectors.queue_overview()


@router.post(
    "/queue/pause",
    auth=operate_auth,
    response={200: QueueOut, 400: Message, **AUTH_ERRORS},
    summary="Pause claiming of a type, or of everything with {}",
)
def pause_queue(request: HttpRequest, body: QueueTypeIn):
    queue.pause(body.type)
    return selectors.queue_overview()


@router.post(
    "/queue/resume",
    auth=operate_auth,
    response={200: QueueOut, 400: Message, **AUTH_ERRORS},
    summary="Resume claiming of a type, or of everything with {}; dispatchers wake at once",
)
def resume_queue(request: HttpRequest, body: QueueTypeIn):
    queue.resume(body.type)
    return selectors.queue_overview()


@router.put(
    "/queue/limit",
    auth=operate_auth,
    response={200: QueueOut, 400: Message, **AUTH_ERRORS},
    summary="Override how many tasks of a type run at once (null clears the override)",
)
def set_queue_limit(request: HttpRequest, body: QueueLimitIn):
    queue.set_concurrency_limit(body.type, body.limit)
    return selectors.queue_overview()
