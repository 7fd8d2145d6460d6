"""The tasks endpoints: submit, list, read, run now, cancel, act on all that match, the audit
trail, and the queue's controls (pause, resume, concurrency limits).

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
from django.urls import reverse
from ninja import Field, Header, Query, Router, Schema, Status
from pydantic import ConfigDict, field_validator

from tasks import audit, bulk, idempotency, models, operations, permissions, selectors
from tasks.auth import operate_auth, require_scope
from tasks.ids import parse_id_prefix
from tasks.models import BulkAction
from tasks.validation import (
    NO_NUL,
    ConcurrencyLimit,
    IsoDatetime,
    NewTask,
    QueueType,
    check_params,
)

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


def api_actor(request: HttpRequest) -> audit.Actor:
    """Who an API call acts for: the token's owner (naming the token) or the session's user."""
    return audit.Actor.of_request(request, models.AuditVia.API)


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


class TaskRun(Schema):
    """One attempt as an agent ran it."""

    attempt: int = Field(description="The attempt's number (the task's `attempts` at its claim).")
    node_id: str | None = Field(description="The Ray node's id (hex).")
    node_ip: str | None = Field(description="The Ray node's IP address.")
    pid: int | None = Field(description="The agent's worker process id on that node.")
    actor_id: str | None = Field(description="The agent actor's Ray id (hex).")
    organ_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: Literal["completed", "error", "timeout", "system", "cancelled"] = Field(
        description=(
            "`system`: Ray lost the attempt (its agent actor died, its node was removed, its "
            "worker was killed for memory, an object was lost); retried at once and not "
            "counted against `max_attempts`."
        )
    )
    log: str | None = Field(
        description=(
            "What the handler logged (`logging` records at INFO and above, and its stdout and "
            "stderr), cut at 65,536 characters with the cut said; null if nothing."
        )
    )


class TaskOut(TaskSummary):
    params: Any
    result: Any
    error_history: Any
    runs: list[TaskRun] = Field(
        default_factory=list,
        description="Each attempt an agent reported, oldest first (the newest 50 are kept).",
    )
    system_failures: int = Field(
        0,
        description=(
            "Attempts Ray lost (runs with outcome `system`): they do not count against "
            "`max_attempts`, so the attempts used are `attempts - system_failures`."
        ),
    )
    max_attempts: int | None
    locked_at: datetime | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    unique_key: str | None
    waiting: str | None = Field(
        None, description="Why a QUEUED or RETRY task is not running yet; null otherwise."
    )


class SubmittedTask(TaskOut):
    existing: bool = Field(
        description=(
            "true (answered 200): no task was made; this is the unfinished task holding the "
            "`unique_key`, or the task an earlier request with the same `Idempotency-Key` made"
        )
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


class FilterFields(Schema):
    """What selects tasks, for a listing and for an action on all that match."""

    status: StatusName | None = None
    type: Text | None = None
    domain: Text | None = None
    error: Text | None = Field(None, description="A part of the task's error, in any case.")
    created_after: IsoDatetime | None = Field(None, description="Created at or after.")
    created_before: IsoDatetime | None = Field(None, description="Created before.")
    updated_after: IsoDatetime | None = Field(None, description="Last changed at or after.")
    updated_before: IsoDatetime | None = Field(None, description="Last changed before.")
    id: TaskIdText | None = None

    def task_filter(self, params: dict[str, Any] | None) -> selectors.TaskFilter:
        if self.id is not None:
            parse_id_prefix(self.id)  # an empty ?id= is a malformed ID, not "no filter"
        values = self.model_dump(include=set(FilterFields.model_fields), exclude={"id"})
        return selectors.TaskFilter(**values, id_prefix=self.id, params=params or None)


class TaskFilters(FilterFields):
    params: Text | None = Field(
        None,
        description='Tasks whose params contain this JSON object, e.g. `{"customer": 42}` '
        "(URL-encoded).",
    )
    cursor: Text | None = Field(None, description="The `next_cursor` of the previous page.")
    limit: int = Field(50, ge=1, le=selectors.MAX_PAGE)


class MatchFilter(FilterFields):
    """Unknown fields are refused, so a misspelt one never widens the action."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] | None = Field(
        None, description="Tasks whose params contain this JSON object."
    )

    @field_validator("params")
    @classmethod
    def params_fit(cls, params: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if params is None else check_params(params)


class BulkIn(Schema):
    model_config = ConfigDict(extra="forbid")

    action: Literal[bulk.ACTIONS]
    filter: MatchFilter = Field(description="At least one field: an action needs a filter.")
    dry_run: bool = Field(False, description="Only count the tasks it would touch.")


class BulkCount(Schema):
    action: str
    total: int
    snapshot_at: datetime


class BulkOut(Schema):
    id: int
    action: str
    state: Literal["running", "finished", "failed", "interrupted"]
    filter: dict[str, Any]
    total: int = Field(description="Tasks matching when the action was accepted.")
    done: int
    skipped: int = Field(description="Matched, but their status no longer allowed the action.")
    percent: int
    error: str
    requested_by: str
    snapshot_at: datetime = Field(description="Only tasks created up to this are touched.")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    url: str


# The error answers every endpoint may give (seedcore_site/api.py makes them): no or bad
# credentials, a session's unsafe request without CSRF, and an invalid request.
AUTH_ERRORS = {401: Message, 403: Message, 422: InvalidInput}
ID_ERRORS = {**AUTH_ERRORS, 400: Message, 404: Message, 409: AmbiguousId}
ACTION_ERRORS = {**ID_ERRORS, 409: AmbiguousId | Conflict}


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        None,
        alias=idempotency.HEADER,
        min_length=1,
        max_length=idempotency.MAX_KEY_LENGTH,
        pattern=idempotency.KEY_PATTERN,
        description=(
            "Any printable ASCII text, e.g. a UUID. Sending the same request with the same key "
            f"within {idempotency.WINDOW_TEXT} answers the task the first one made (200), even "
            "once it has finished; the same key with a different request is refused (409). "
            "Keys are per caller (user)."
        ),
    ),
]


@router.post(
    "/tasks",
    auth=operate_auth,
    response={201: SubmittedTask, 200: SubmittedTask, 400: Message, 409: Message, **AUTH_ERRORS},
    summary="Queue a task (an organism control type needs the admin scope)",
    description=(
        "A new task answers 201. With a `unique_key` an unfinished task (QUEUED, RETRY, "
        "RUNNING) already holds, or a repeated `Idempotency-Key`, no task is made: the answer "
        "is 200 with that task and `existing: true`."
    ),
)
def submit_task(request: HttpRequest, body: TaskIn, idempotency_key: IdempotencyKeyHeader = None):
    require_scope(request, permissions.scope_to_submit(body.type))
    submitted = operations.submit(
        body.model_dump(),
        api_actor(request),
        idempotency_key=None if idempotency_key is None else (request.auth.pk, idempotency_key),
    )
    return Status(
        201 if submitted.created else 200, {**submitted.task, "existing": not submitted.created}
    )


@router.get(
    "/tasks",
    response={200: TaskPage, 400: Message, **AUTH_ERRORS},
    summary="List tasks, newest first",
)
def list_tasks(request: HttpRequest, filters: Query[TaskFilters]):
    params = None if filters.params is None else selectors.parse_params_filter(filters.params)
    page = selectors.list_tasks(
        filters.task_filter(params), cursor=filters.cursor, limit=filters.limit
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.post(
    "/tasks/bulk",
    auth=operate_auth,
    response={202: BulkOut, 200: BulkCount, 400: Message, **AUTH_ERRORS},
    summary="Cancel or retry every task matching a filter, in the background",
)
def start_bulk(request: HttpRequest, body: BulkIn):
    task_filter = body.filter.task_filter(body.filter.params)
    if task_filter.is_empty():
        raise selectors.InvalidFilter("filter", "set at least one field")
    if body.dry_run:
        total, snapshot_at = bulk.count(task_filter)
        return Status(200, {"action": body.action, "total": total, "snapshot_at": snapshot_at})
    started = operations.start_bulk(body.action, task_filter, api_actor(request))
    return Status(202, _bulk_out(request, started))


@router.get(
    "/tasks/bulk/{bulk_id}",
    url_name="get_bulk",
    response={200: BulkOut, 404: Message, **AUTH_ERRORS},
    summary="The progress of an action on all matching tasks",
)
def get_bulk(request: HttpRequest, bulk_id: int):
    return _bulk_out(request, bulk.get(bulk_id))


def _bulk_out(request: HttpRequest, action: BulkAction) -> dict[str, Any]:
    url = request.build_absolute_uri(reverse("api:get_bulk", args=[action.pk]))
    return {**bulk.progress(action), "url": url}


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
    return operations.run_now(selectors.resolve_id(task_id), api_actor(request))


@router.post(
    "/tasks/{task_id}/cancel",
    auth=operate_auth,
    response={200: TaskOut, **ACTION_ERRORS},
    summary="Cancel a task (a RUNNING one ends CANCELLED when its attempt stops)",
)
def cancel_task(request: HttpRequest, task_id: TaskIdText):
    return operations.cancel(selectors.resolve_id(task_id), api_actor(request))


# ---------------------------------------------------------------------------------------------
# The audit trail


class AuditItem(Schema):
    id: int
    at: datetime
    actor: str = Field(description="The user (and the API token, if one was used) or CLI user.")
    via: Literal[tuple(models.AuditVia.values)]
    address: str | None = Field(description="The client address the action came from.")
    action: str = Field(description="e.g. `task.cancel`, `organism.shutdown_organism`.")
    target: str
    task_id: UUID | None
    detail: dict[str, Any]


class AuditPage(Schema):
    items: list[AuditItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class AuditFilters(Schema):
    task: TaskIdText | None = Field(None, description="Entries about this task (UUID or prefix).")
    actor: Text | None = Field(None, description="Actor name contains this.")
    via: Literal[tuple(models.AuditVia.values)] | None = None
    action: Text | None = Field(None, description="Action contains this, e.g. `cancel`.")
    since: IsoDatetime | None = Field(None, description="At or after.")
    before: IsoDatetime | None = Field(None, description="Before.")
    cursor: Text | None = Field(None, description="The `next_cursor` of the previous page.")
    limit: int = Field(50, ge=1, le=audit.MAX_PAGE)


@router.get(
    "/audit",
    response={200: AuditPage, 400: Message, **AUTH_ERRORS},
    summary="Operator actions, newest first (who did what, when, from where)",
    tags=["audit"],
)
def list_audit(request: HttpRequest, filters: Query[AuditFilters]):
    if filters.task is not None:
        parse_id_prefix(filters.task)  # an empty ?task= is a malformed ID, not "no filter"
    page = audit.list_entries(
        audit.AuditFilter(
            task=filters.task,
            actor=filters.actor,
            via=filters.via,
            action=filters.action,
            since=filters.since,
            before=filters.before,
        ),
        cursor=filters.cursor,
        limit=filters.limit,
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


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
    waiting_for: str | None = Field(
        None,
        description="Set while no agent can take the type's tasks (its organ has no agent "
        "placed on a node): what is missing. Its tasks stay QUEUED meanwhile.",
    )
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
    operations.pause_queue(body.type, api_actor(request))
    return selectors.queue_overview()


@router.post(
    "/queue/resume",
    auth=operate_auth,
    response={200: QueueOut, 400: Message, **AUTH_ERRORS},
    summary="Resume claiming of a type, or of everything with {}; dispatchers wake at once",
)
def resume_queue(request: HttpRequest, body: QueueTypeIn):
    operations.resume_queue(body.type, api_actor(request))
    return selectors.queue_overview()


@router.put(
    "/queue/limit",
    auth=operate_auth,
    response={200: QueueOut, 400: Message, **AUTH_ERRORS},
    summary="Override how many tasks of a type run at once (null clears the override)",
)
def set_queue_limit(request: HttpRequest, body: QueueLimitIn):
    operations.set_concurrency_limit(body.type, body.limit, api_actor(request))
    return selectors.queue_overview()
