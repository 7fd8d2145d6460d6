"""The tasks endpoints: submit, list, read, run now, cancel.

Thin over ``tasks.queue`` (every status change) and ``tasks.selectors`` (listings). Errors
are raised as the engine's exceptions and turned into JSON by ``seedcore_site.api``.

Limits on a submitted task (documented in the OpenAPI schema too): ``type`` and ``domain``
up to 200 characters, ``description`` up to 10,000, ``params`` up to 64 KiB of JSON nested
at most 100 levels deep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from django.http import HttpRequest
from django.utils.dateparse import parse_datetime
from ninja import Field, Query, Router, Schema, Status
from pydantic import AwareDatetime, BeforeValidator, ConfigDict, field_validator

from tasks import queue, selectors
from tasks.ids import parse_id_prefix

MAX_TYPE_LENGTH = 200
MAX_DOMAIN_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_PARAMS_BYTES = 64 * 1024
# Far more than any real params need, and far below where encoding or decoding the JSON runs
# out of Python's recursion limit (a RecursionError, so a 500, at about 900 levels).
MAX_PARAMS_DEPTH = 100

# PostgreSQL cannot store NUL in text or jsonb; refusing it here keeps it a 422, not a 500.
NO_NUL = r"^[^\x00]*$"
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


def _iso_datetime(value: Any) -> Any:
    # Pydantic would also take a number as a Unix time; the schema promises ISO 8601 only.
    # Converting to UTC here turns a date that overflows (year 1 at +16:00) into a 422.
    if isinstance(value, datetime):
        value = value.isoformat()
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2030-01-01T00:00:00Z")
    if parsed.tzinfo is None:
        return parsed  # AwareDatetime says what is missing
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]


def _whole_number(value: Any) -> Any:
    # JSON has one number type, so 3.0 is a whole number; true and "3" are not numbers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
StatusName = Literal["QUEUED", "RUNNING", "COMPLETED", "FAILED", "RETRY", "CANCELLED"]

router = Router(tags=["tasks"])


# Lone surrogates are no Unicode: PostgreSQL's jsonb refuses "\ud800" (a 500 if let through).
SURROGATE = re.compile("[\ud800-\udfff]")


def _json_nodes(value: Any) -> Iterator[tuple[int, Any]]:
    """Every value and object key of a JSON value with its nesting depth (objects and arrays
    count from 1), walked without recursion so no depth can overflow the stack."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        yield depth, item
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Refuse params the database cannot store (NUL, lone surrogates, NaN or Infinity) or
    that exceed MAX_PARAMS_DEPTH or MAX_PARAMS_BYTES."""
    # The strings themselves, not the encoded JSON: a literal backslash followed by "u0000"
    # is encoded as "\\u0000", which holds the text "\u0000" but no NUL.
    for depth, item in _json_nodes(params):
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("params must not hold NUL characters")
            if SURROGATE.search(item):
                raise ValueError("params must not hold lone surrogates (\\ud800-\\udfff)")
        elif depth > MAX_PARAMS_DEPTH and isinstance(item, dict | list):
            raise ValueError(f"params must not nest more than {MAX_PARAMS_DEPTH} levels deep")
    try:
        encoded = json.dumps(params, allow_nan=False)
    except ValueError:
        raise ValueError("params must not hold NaN or Infinity") from None
    if len(encoded.encode()) > MAX_PARAMS_BYTES:
        raise ValueError(f"params is larger than {MAX_PARAMS_BYTES} bytes of JSON")
    return params


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


class TaskIn(Schema):
    """A task to queue. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        min_length=1,
        max_length=MAX_TYPE_LENGTH,
        pattern=NO_NUL,
        strict=True,
        description="The handler to run; a type nobody handles ends FAILED.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"A JSON object, at most {MAX_PARAMS_BYTES} bytes and {MAX_PARAMS_DEPTH} levels "
            "deep, with no NUL characters or lone surrogates."
        ),
    )
    description: str | None = Field(
        None, max_length=MAX_DESCRIPTION_LENGTH, pattern=NO_NUL, strict=True
    )
    domain: str | None = Field(None, max_length=MAX_DOMAIN_LENGTH, pattern=NO_NUL, strict=True)
    drift_score: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False, strict=True)
    priority: WholeNumber = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    # Field before the validator, or pydantic writes "ge"/"le" into the JSON schema as is.
    max_attempts: Annotated[int, Field(ge=1, le=100), BeforeValidator(_whole_number)] | None = None
    run_after: IsoDatetime | None = Field(
        None, description="Not before this time (with a UTC offset)."
    )

    @field_validator("params")
    @classmethod
    def params_fit(cls, params: dict[str, Any]) -> dict[str, Any]:
        return check_params(params)


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


@router.post("/tasks", response={201: TaskOut, 400: Message, **AUTH_ERRORS}, summary="Queue a task")
def submit_task(request: HttpRequest, body: TaskIn):
    task = queue.enqueue(
        type=body.type,
        params=body.params,
        description=body.description,
        domain=body.domain,
        drift_score=body.drift_score,
        priority=body.priority,
        run_after=body.run_after,
        max_attempts=body.max_attempts,
    )
    return Status(201, task)


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
    return queue.get(queue.resolve_id(task_id))


@router.get(
    "/tasks/{task_id}/status", response={200: TaskStatus, **ID_ERRORS}, summary="A task's status"
)
def get_task_status(request: HttpRequest, task_id: TaskIdText):
    return queue.get(queue.resolve_id(task_id))


@router.post(
    "/tasks/{task_id}/run",
    response={200: TaskOut, **ACTION_ERRORS},
    summary="Queue a FAILED, CANCELLED or RETRY task to run now",
)
def run_task(request: HttpRequest, task_id: TaskIdText):
    return queue.run_now(queue.resolve_id(task_id))


@router.post(
    "/tasks/{task_id}/cancel",
    response={200: TaskOut, **ACTION_ERRORS},
    summary="Cancel a task (a RUNNING one ends CANCELLED when its attempt stops)",
)
def cancel_task(request: HttpRequest, task_id: TaskIdText):
    return queue.cancel(queue.resolve_id(task_id))
