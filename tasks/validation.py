"""What a task must be to be queued or run: one set of rules for every way in.

The HTTP API takes :class:`NewTask` as its body (and the organism API :class:`TaskFields`), so
their OpenAPI schema documents these very rules; the CLI and the admin's form call
:func:`validate_task_spec`, which applies the same model and says which field is wrong.

Limits: ``type``, ``domain`` and ``unique_key`` up to 200 characters (``unique_key`` not
empty), ``description`` up to 10,000, ``params`` up to 64 KiB of JSON nested at most 100
levels deep, and nothing PostgreSQL cannot store (NUL, lone surrogates, NaN or Infinity).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from django.utils.dateparse import parse_datetime
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

MAX_TYPE_LENGTH = 200
MAX_DOMAIN_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_UNIQUE_KEY_LENGTH = 200
MAX_PARAMS_BYTES = 64 * 1024
# Far more than any real params need, and far below where encoding or decoding the JSON runs
# out of Python's recursion limit (a RecursionError, so a 500, at about 900 levels).
MAX_PARAMS_DEPTH = 100

# PostgreSQL cannot store NUL in text or jsonb; refusing it here keeps it a 422, not a 500.
NO_NUL = r"^[^\x00]*$"
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


class TaskFields(BaseModel):
    """What every task has, queued or run at once on an organ. Unknown fields are refused."""

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

    @field_validator("params")
    @classmethod
    def params_fit(cls, params: dict[str, Any]) -> dict[str, Any]:
        return check_params(params)


class NewTask(TaskFields):
    """A task to queue: what every task has, and when and how often it may run."""

    priority: WholeNumber = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    # Field before the validator, or pydantic writes "ge"/"le" into the JSON schema as is.
    max_attempts: Annotated[int, Field(ge=1, le=100), BeforeValidator(_whole_number)] | None = None
    run_after: IsoDatetime | None = Field(
        None, description="Not before this time (with a UTC offset)."
    )
    unique_key: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_UNIQUE_KEY_LENGTH,
        pattern=NO_NUL,
        strict=True,
        description=(
            "While an unfinished task (QUEUED, RETRY, RUNNING) holds this key, submitting it "
            "again returns that task instead of making a second one."
        ),
    )


class InvalidTask(ValueError):
    """A task the rules refuse; ``errors`` maps each field at fault to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


def validate_task_spec(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a task to queue, checked by :class:`NewTask` and cleaned: keyword
    arguments for ``tasks.queue.enqueue``, with the fields left empty left out.

    Raises :class:`InvalidTask` naming each field at fault (the first problem of each).
    """
    try:
        task = NewTask.model_validate(dict(values))
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "task"
            message = str(error["msg"]).removeprefix("Value error, ")
            errors.setdefault(field, message)
        raise InvalidTask(errors) from None
    return task.model_dump(exclude_none=True)


# ---------------------------------------------------------------------------------------------
# Queue controls (tasks.queue.pause, resume, set_concurrency_limit)

MAX_CONCURRENCY_LIMIT = 100_000

# Not blank, no NUL: what validate_queue_type accepts, said in the schema too.
NOT_BLANK_NO_NUL = r"^[^\x00]*[^\x00\s][^\x00]*$"
QueueType = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TYPE_LENGTH, pattern=NOT_BLANK_NO_NUL, strict=True),
]
# A whole number, as JSON has it (2.0 is one).
ConcurrencyLimit = Annotated[
    int, Field(ge=1, le=MAX_CONCURRENCY_LIMIT), BeforeValidator(_whole_number)
]


def validate_queue_type(value: Any) -> str:
    """A task type to pause, resume or cap: what a task's ``type`` may be (it need not have
    any task yet). Raises :class:`InvalidTask` naming ``type``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidTask({"type": "must name a task type (it may not be blank)"})
    if len(value) > MAX_TYPE_LENGTH:
        raise InvalidTask({"type": f"must be at most {MAX_TYPE_LENGTH} characters"})
    if "\x00" in value or SURROGATE.search(value):
        raise InvalidTask({"type": "must not hold NUL characters or lone surrogates"})
    return value


def validate_concurrency_limit(value: Any) -> int | None:
    """A concurrency limit: a whole number from 1 to MAX_CONCURRENCY_LIMIT, or None (no
    limit). Raises :class:`InvalidTask` naming ``limit``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTask({"limit": "must be a whole number, or null for no limit"})
    if not 1 <= value <= MAX_CONCURRENCY_LIMIT:
        raise InvalidTask({"limit": f"must be between 1 and {MAX_CONCURRENCY_LIMIT}"})
    return value
