"""Every read of SeedCore's tables: tasks, dispatcher heartbeats, metric totals, migrations.

Nothing here changes a row (the writes are ``tasks.queue`` and ``tasks.heartbeats``).

- Listings are newest first with keyset pagination over (created_at, id): the cost of a page
  does not grow with its depth, and nothing counts the whole table.
- Counts per status are exact up to a cap and estimated from PostgreSQL's planner statistics
  above it, so a dashboard never counts millions of rows.
- A short ID (a hex prefix) becomes an ID range, so resolving it walks the primary key index.
- Dispatcher liveness is one rule (:data:`DISPATCHER_ALIVE_SQL`), on the database's clock: the
  health endpoint, the dashboard and /metrics read it from :func:`list_dispatchers`, and the
  reaper (``tasks.queue.reap``) frees the tasks of the dispatchers it calls dead.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks.ids import MAX_CANDIDATES, AmbiguousTaskId, TaskNotFound, parse_id_prefix
from tasks.models import ALL_TYPES, UNFINISHED_STATUSES, Status, Task
from tasks.sql import fetch, task_uuid

# ---------------------------------------------------------------------------------------------
# Task listings

MAX_PAGE = 500
LIST_FIELDS = (
    "id",
    "status",
    "type",
    "domain",
    "description",
    "attempts",
    "priority",
    "drift_score",
    "run_after",
    "locked_by",
    "created_at",
    "updated_at",
    "error",
)


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


class InvalidFilter(ValueError):
    """A filter value that cannot be used; ``field`` names it (a 400 in the API, a form error
    on the page)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class TaskFilter:
    status: str | None = None
    type: str | None = None
    domain: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    id_prefix: str | None = None
    # JSON containment (``params @> …``): {"customer": {"id": 42}} matches any task whose
    # params hold that object, whatever else they hold.
    params: dict[str, Any] | None = None
    # A case-insensitive substring of the task's latest error.
    error: str | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None

    def q(self) -> Q:
        """The filter as a Q; raises tasks.ids.InvalidTaskId for a malformed ID prefix."""
        q = Q()
        if self.status:
            q &= Q(status=self.status)
        for column in ("type", "domain"):
            value = getattr(self, column)
            if value:
                # PostgreSQL refuses NUL in a text parameter (a 500 for the dashboard and the
                # CLI) and no row can hold it, so such a filter matches nothing.
                q &= Q(pk__in=[]) if "\x00" in value else Q(**{column: value})
        if self.error:
            # icontains escapes LIKE's wildcards, so "100%" and "a_b" match themselves.
            q &= Q(pk__in=[]) if "\x00" in self.error else Q(error__icontains=self.error)
        if self.params:
            # Without an index on params (see migration 0006_bulk_actions for why), containment
            # is checked on the rows the other conditions leave.
            q &= Q(params__contains=self.params)
        for column in ("created", "updated"):
            after, before = getattr(self, f"{column}_after"), getattr(self, f"{column}_before")
            if after:
                q &= Q(**{f"{column}_at__gte": after})
            if before:
                q &= Q(**{f"{column}_at__lt": before})
        if self.id_prefix:
            id_range = parse_id_prefix(self.id_prefix)
            q &= Q(id__gte=id_range.low, id__lte=id_range.high)
        return q

    def is_empty(self) -> bool:
        """True when nothing is set (blank values select nothing either): every task matches."""
        return not any(vars(self).values())

    def describe(self) -> dict[str, Any]:
        """The fields that are set, as JSON values (times in ISO 8601): how a bulk action
        stores its filter (:meth:`from_json` reads it back)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in vars(self).items()
            if value not in (None, "")
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskFilter:
        """The filter :meth:`describe` gave (a stored bulk action's)."""
        values = dict(data)
        for name in TIME_FIELDS:
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


TIME_FIELDS = ("created_after", "created_before", "updated_after", "updated_before")


def parse_params_filter(text: str) -> dict[str, Any] | None:
    """A params filter as typed (JSON text): a JSON object, or None when blank.

    Raises :class:`InvalidFilter` naming ``params`` for anything else, or for what no stored
    params can hold (tasks.validation's rules: NUL, lone surrogates, NaN, too deep or big).
    """
    from tasks.validation import check_params

    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidFilter("params", 'must be a JSON object, e.g. {"customer": 42}') from None
    if not isinstance(value, dict):
        raise InvalidFilter("params", 'must be a JSON object, e.g. {"customer": 42}')
    try:
        return check_params(value) or None
    except ValueError as exc:
        raise InvalidFilter("params", str(exc)) from None


def parse_time_filter(field: str, text: str) -> datetime | None:
    """A time bound as typed: ISO 8601 (``2026-12-02T14:00`` or with an offset); a time
    without an offset is in the server's time zone (UTC unless TIME_ZONE says otherwise)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None:
        raise InvalidFilter(field, "must be a date and time like 2026-12-02T14:00")
    if value.tzinfo is None:
        value = timezone.make_aware(value)
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidFilter(field, "is out of range") from None
    return value


def encode_cursor(created_at: datetime, task_id: Any) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor from :func:`encode_cursor` holds; InvalidCursor for any
    other string. A cursor is opaque but travels through clients, so a forged one (an ID that
    is no UUID, a time without an offset or out of range in UTC) is refused here rather than
    left for the database to choke on."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, task_id = raw.split("|", 1)
        created_at = parse_datetime(created)
        task_id = str(uuid.UUID(task_id))
        if created_at is not None:
            created_at = created_at.astimezone(UTC) if created_at.tzinfo else None
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        created_at = None
    if created_at is None:
        raise InvalidCursor("cursor is malformed: pass back the next_cursor of a previous page")
    return created_at, task_id


def list_tasks(
    task_filter: TaskFilter | None = None, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """One page of tasks, newest first, as dicts of LIST_FIELDS."""
    limit = max(1, min(limit, MAX_PAGE))
    queryset = Task.objects.filter((task_filter or TaskFilter()).q())
    if cursor:
        created_at, task_id = decode_cursor(cursor)
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=task_id)
        )
    rows = list(queryset.order_by("-created_at", "-id").values(*LIST_FIELDS)[: limit + 1])
    for row in rows:
        row["id"] = str(row["id"])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return Page(items=rows, next_cursor=next_cursor)


# ---------------------------------------------------------------------------------------------
# What a bulk action (tasks.bulk) touches: the tasks a filter matches, created up to a bound


def database_now(*, using: str = DEFAULT_DB_ALIAS) -> datetime:
    """The database's clock as it stamps ``created_at`` (the statement's start, not the
    transaction's)."""
    return fetch("SELECT statement_timestamp() AS now", using=using)[0]["now"]


def _matching(task_filter: TaskFilter, created_until: datetime, using: str):
    return Task.objects.using(using).filter(task_filter.q(), created_at__lte=created_until)


def count_matching(
    task_filter: TaskFilter, *, created_until: datetime, using: str = DEFAULT_DB_ALIAS
) -> int:
    """How many tasks match ``task_filter`` among those created up to ``created_until``."""
    return _matching(task_filter, created_until, using).count()


def types_matching(
    task_filter: TaskFilter, *, among: Iterable[str], using: str = DEFAULT_DB_ALIAS
) -> list[str]:
    """Which of the types ``among`` some task matching ``task_filter`` has."""
    found = (
        Task.objects.using(using)
        .filter(task_filter.q(), type__in=list(among))
        .values_list("type", flat=True)
        .distinct()
    )
    return sorted(found)


def batch_query(
    task_filter: TaskFilter,
    *,
    created_until: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
    using: str = DEFAULT_DB_ALIAS,
) -> tuple[str, list[Any]]:
    """The SQL (and its parameters) selecting the ``id`` and ``created_at`` of the next
    ``limit`` matching tasks after ``after``, oldest first, for ``tasks.queue.apply_to_batch``.
    Keyset order over (created_at, id) walks ``tasks_created_idx`` (or the status index), so
    each batch costs the same however far the action has got."""
    queryset = _matching(task_filter, created_until, using)
    if after is not None:
        created_at, task_id = after
        queryset = queryset.filter(
            Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=task_id)
        )
    queryset = queryset.order_by("created_at", "id").values("id", "created_at")[:limit]
    sql, params = queryset.query.get_compiler(using).as_sql()
    return sql, list(params)


# ---------------------------------------------------------------------------------------------
# One task


# The columns every queue write returns (the row as the claim hands it to a dispatcher)...
TASK_COLUMNS = (
    "id, status, type, params, attempts, max_attempts, priority, drift_score, domain, "
    "description, locked_by, locked_at, lease_expires_at, run_after, created_at"
)
# ... and the rest, for a task shown in full.
_DETAIL_COLUMNS = (
    "result, error, error_history, cancel_requested, unique_key, updated_at, runs, system_failures"
)


def get_task(task_id: str | uuid.UUID, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """One task in full, as a plain dict; TaskNotFound if there is none."""
    rows = fetch(
        f"SELECT {TASK_COLUMNS}, {_DETAIL_COLUMNS} FROM tasks WHERE id = %s",
        [task_uuid(task_id)],
        using=using,
    )
    if not rows:
        raise TaskNotFound(f"no task with ID {task_id}")
    return rows[0]


def unfinished_holder(unique_key: str, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any] | None:
    """The unfinished task holding ``unique_key`` (its id and status), if any."""
    rows = fetch(
        "SELECT id, status FROM tasks WHERE unique_key = %s "
        f"AND status IN ({', '.join(repr(str(s)) for s in UNFINISHED_STATUSES)})",
        [unique_key],
        using=using,
    )
    return rows[0] if rows else None


def resolve_id(text: str, *, using: str = DEFAULT_DB_ALIAS) -> str:
    """Resolve a full UUID or a hex prefix of at least 4 characters to one task's ID.

    Raises InvalidTaskId, TaskNotFound, or AmbiguousTaskId naming up to 5 candidates.
    The prefix becomes an ID range, so the lookup walks the primary key index.
    """
    id_range = parse_id_prefix(text)
    matches = [
        str(task_id)
        for task_id in Task.objects.using(using)
        .filter(id__gte=id_range.low, id__lte=id_range.high)
        .order_by("id")
        .values_list("id", flat=True)[:MAX_CANDIDATES]
    ]
    if not matches:
        raise TaskNotFound(f"no task matches ID {text.strip()!r}")
    if len(matches) > 1:
        raise AmbiguousTaskId(text.strip(), matches)
    return matches[0]


# ---------------------------------------------------------------------------------------------
# Counts per status

COUNT_CAP = 100_000


@dataclass(frozen=True)
class StatusCount:
    count: int
    exact: bool


def count_by_status(
    *, cap: int = COUNT_CAP, using: str = DEFAULT_DB_ALIAS
) -> dict[str, StatusCount]:
    """Tasks per status, exact up to ``cap`` each, so the cost stays bounded at any size.

    Above the cap, PostgreSQL's planner statistics give an estimate (``exact=False``), never
    below the cap itself.
    """
    parts = [
        "SELECT %s AS status, (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = %s "
        "LIMIT %s) AS capped) AS n"
    ] * len(Status.values)
    params: list[Any] = []
    for status in Status.values:
        params += [status, status, cap]
    counts = {
        row["status"]: StatusCount(row["n"], row["n"] < cap)
        for row in fetch(" UNION ALL ".join(parts), params, using=using)
    }
    over = [status for status, count in counts.items() if not count.exact]
    if over:
        estimates = _planner_estimates(using)
        for status in over:
            counts[status] = StatusCount(max(estimates.get(status, 0), cap), False)
    return counts


def _planner_estimates(using: str) -> dict[str, int]:
    rows = fetch(
        "SELECT s.most_common_vals::text::text[] AS vals, s.most_common_freqs AS freqs, "
        "c.reltuples AS total FROM pg_stats AS s JOIN pg_class AS c ON c.relname = s.tablename "
        "WHERE s.tablename = 'tasks' AND s.attname = 'status' AND s.schemaname = current_schema()",
        using=using,
    )
    if not rows or rows[0]["vals"] is None:
        return {}
    total = max(rows[0]["total"], 0)
    return {
        val: int(freq * total) for val, freq in zip(rows[0]["vals"], rows[0]["freqs"], strict=True)
    }


# ---------------------------------------------------------------------------------------------
# Dispatchers: heartbeats, liveness, and the stats /metrics sums

# A dispatcher is alive while its last heartbeat is at most SEEDCORE_HEARTBEAT_TIMEOUT seconds
# old, on the database's clock (the clock that stamps the beats): the one statement of the rule,
# over a ``dispatchers`` row named ``{row}``, with one parameter, the timeout in seconds.
DISPATCHER_ALIVE_SQL = "{row}.last_beat_at >= now() - %s * interval '1 second'"


def heartbeat_timeout() -> float:
    """Seconds of silence after which a dispatcher is dead (SEEDCORE_HEARTBEAT_TIMEOUT)."""
    return settings.SEEDCORE_HEARTBEAT_TIMEOUT


# A heartbeat row as the readers want it: on the database's clock, seconds since its last beat
# (to 0.1 s) and whether it is alive; rows written before the breaker existed have no circuit
# state, and their breaker was closed.
_DISPATCHER_COLUMNS = (
    "name, node, pid, started_at, last_beat_at, in_flight, processed, "
    "coalesce(stats ->> 'circuit', 'closed') AS circuit, "
    "round(greatest(extract(epoch FROM now() - last_beat_at)::numeric, 0), 1)::float8 "
    f"AS beat_age, {DISPATCHER_ALIVE_SQL.format(row='d')} AS alive"
)


def list_dispatchers(*, stats: bool = False, using: str = DEFAULT_DB_ALIAS) -> list[dict[str, Any]]:
    """Every dispatcher heartbeat row, by name, with ``circuit`` (its breaker's state),
    ``beat_age`` and ``alive`` (:data:`DISPATCHER_ALIVE_SQL`, SEEDCORE_HEARTBEAT_TIMEOUT);
    ``stats=True`` adds the cumulative stats it wrote."""
    columns = f"{_DISPATCHER_COLUMNS}, stats" if stats else _DISPATCHER_COLUMNS
    return fetch(
        f"SELECT {columns} FROM dispatchers AS d ORDER BY name",
        [heartbeat_timeout()],
        using=using,
    )


def metric_sources(*, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """What /metrics sums: every heartbeat row (as :func:`list_dispatchers` with its stats)
    and every totals row (``tasks.heartbeats`` writes both)."""
    dispatchers = list_dispatchers(stats=True, using=using)
    for row in dispatchers:
        row["stats"] = row["stats"] or {}
    totals = {
        row["name"]: row["stats"] or {}
        for row in fetch("SELECT name, stats FROM metric_totals", using=using)
    }
    return {"dispatchers": dispatchers, "totals": totals}


# ---------------------------------------------------------------------------------------------
# Migrations


def pending_migrations(using: str = DEFAULT_DB_ALIAS) -> int:
    """How many migrations the database lacks. Raises the database's error if it does not
    answer."""
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[using]
    connection.ensure_connection()
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


# ---------------------------------------------------------------------------------------------
# Schedules (tasks.schedules keeps them)

SCHEDULE_RUNS_SHOWN = 50


def list_schedules(*, using: str = DEFAULT_DB_ALIAS) -> list[dict[str, Any]]:
    """Every schedule with its timing, next and last run and its last task's status."""
    return fetch(
        "SELECT s.id, s.name, s.type, s.cron, s.interval_seconds, s.timezone, s.enabled, "
        "s.catch_up, s.priority, s.next_run_at, s.last_run_at, s.last_task_id, "
        "t.status AS last_task_status "
        "FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id ORDER BY s.name",
        using=using,
    )


def get_schedule(schedule_id: int, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any] | None:
    """One schedule, or None (also for an ID no bigint can hold)."""
    if not 1 <= schedule_id <= 2**63 - 1:
        return None
    rows = fetch(
        "SELECT s.id, s.name, s.type, s.params, s.cron, s.interval_seconds, s.timezone, "
        "s.enabled, s.catch_up, s.priority, s.next_run_at, s.last_run_at, s.last_task_id "
        "FROM schedules s WHERE s.id = %s",
        [schedule_id],
        using=using,
    )
    return rows[0] if rows else None


def schedule_runs(
    schedule_id: int, *, limit: int = SCHEDULE_RUNS_SHOWN, using: str = DEFAULT_DB_ALIAS
) -> list[dict[str, Any]]:
    """A schedule's newest runs: the slot (None for Run now), when it was enqueued, and its
    task's id and status."""
    return fetch(
        "SELECT r.slot, r.created_at, r.task_id, t.status, t.attempts, t.updated_at "
        "FROM schedule_runs r JOIN tasks t ON t.id = r.task_id "
        "WHERE r.schedule_id = %s ORDER BY r.created_at DESC, r.id DESC LIMIT %s",
        [schedule_id, limit],
        using=using,
    )


# ---------------------------------------------------------------------------------------------
# Queue controls (written by tasks.queue.pause, resume, set_concurrency_limit)

_CONTROL_COLUMNS = (
    "type, paused, paused_at, concurrency_limit, declared_concurrency, "
    "coalesce(concurrency_limit, declared_concurrency) AS limit, waiting_for, organ_full"
)


def queue_control(type: str, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """One type's controls (``ALL_TYPES`` for everything), as they stand; a type nobody
    paused or capped has no row, and reads as unpaused and uncapped."""
    rows = fetch(
        f"SELECT {_CONTROL_COLUMNS} FROM queue_controls WHERE type = %s", [type], using=using
    )
    return rows[0] if rows else _no_control(type)


def _no_control(type: str) -> dict[str, Any]:
    return {
        "type": type,
        "paused": False,
        "paused_at": None,
        "concurrency_limit": None,
        "declared_concurrency": None,
        "limit": None,
        "waiting_for": None,
        "organ_full": None,
    }


@dataclass(frozen=True)
class QueueState:
    """What holds claimable tasks back, read once for a page or a task: all claiming paused
    (and since when), the paused types, each capped type's limit, RUNNING tasks per type."""

    all_paused_at: datetime | None
    paused: dict[str, datetime | None]
    limits: dict[str, int]
    running: dict[str, int]
    # Types no agent can take now (rundispatcher's word: tasks.queue.set_waiting_for).
    waiting_for: dict[str, str] = field(default_factory=dict)
    # Types whose organs are all full (rundispatcher's word: tasks.queue.set_organ_full).
    organ_full: dict[str, str] = field(default_factory=dict)

    @property
    def all_paused(self) -> bool:
        return self.all_paused_at is not None

    @property
    def anything_paused(self) -> bool:
        return self.all_paused or bool(self.paused)


def queue_state(*, using: str = DEFAULT_DB_ALIAS) -> QueueState:
    """The queue controls and the RUNNING count of each type (RUNNING rows only, through
    their partial index: as many as the dispatchers hold, never the whole table)."""
    return _queue_state(_controls(using), using=using)


def _controls(using: str) -> list[dict[str, Any]]:
    return fetch(f"SELECT {_CONTROL_COLUMNS} FROM queue_controls ORDER BY type", using=using)


def _queue_state(controls: list[dict[str, Any]], *, using: str) -> QueueState:
    running = fetch(
        "SELECT type, count(*) AS n FROM tasks WHERE status = 'RUNNING' GROUP BY type",
        using=using,
    )
    all_paused_at = None
    paused: dict[str, datetime | None] = {}
    for row in controls:
        if not row["paused"]:
            continue
        if row["type"] == ALL_TYPES:
            all_paused_at = row["paused_at"] or datetime.now(UTC)
        else:
            paused[row["type"]] = row["paused_at"]
    return QueueState(
        all_paused_at=all_paused_at,
        paused=paused,
        limits={
            row["type"]: row["limit"]
            for row in controls
            if row["limit"] is not None and row["type"] != ALL_TYPES
        },
        running={row["type"]: row["n"] for row in running},
        waiting_for={row["type"]: row["waiting_for"] for row in controls if row["waiting_for"]},
        organ_full={row["type"]: row["organ_full"] for row in controls if row["organ_full"]},
    )


# Types shown in the queue's overview besides those with controls or RUNNING tasks: the types
# of the next claimable tasks, read in claim order through the claimable index.
QUEUE_HEAD = 1000


def queue_overview(*, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """What ``GET /queue`` and the dashboard show: whether all claiming is paused, and per
    type (controlled, running or next in line) its pause, limits and RUNNING count."""
    rows = _controls(using)
    state = _queue_state(rows, using=using)
    controls = {row["type"]: row for row in rows}
    waiting = fetch(
        "SELECT DISTINCT type FROM (SELECT type FROM tasks WHERE status IN ('QUEUED', 'RETRY') "
        "ORDER BY priority DESC, created_at LIMIT %s) AS head",
        [QUEUE_HEAD],
        using=using,
    )
    types = sorted({t for t in controls if t} | set(state.running) | {r["type"] for r in waiting})
    return {
        "all_paused": state.all_paused,
        "all_paused_at": state.all_paused_at,
        "types": [
            {**controls.get(t, _no_control(t)), "running": state.running.get(t, 0)} for t in types
        ],
    }


# ---------------------------------------------------------------------------------------------
# Why a task waits


def waiting_reason(
    task: dict[str, Any], state: QueueState | None = None, *, using: str = DEFAULT_DB_ALIAS
) -> str | None:
    """Why a QUEUED or RETRY task is not running yet, in one sentence, or None.

    ``task`` needs ``status``, ``type`` and ``run_after``; pass ``state`` (:func:`queue_state`)
    when asking for many tasks at once. Each rule of :data:`WAITING_RULES` is asked in turn
    and the first answer wins, so a new reason is one more rule.
    """
    if task["status"] not in (Status.QUEUED, Status.RETRY):
        return None
    state = state or queue_state(using=using)
    for rule in WAITING_RULES:
        reason = rule(task, state)
        if reason:
            return reason
    return None


def _paused(task: dict[str, Any], state: QueueState) -> str | None:
    if state.all_paused:
        return "all claiming is paused"
    if task["type"] in state.paused:
        return f"type {task['type']} is paused"
    return None


def _not_due(task: dict[str, Any], state: QueueState) -> str | None:
    run_after = task.get("run_after")
    if run_after is not None and run_after > datetime.now(UTC):
        return f"due at {run_after.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return None


def _at_limit(task: dict[str, Any], state: QueueState) -> str | None:
    limit = state.limits.get(task["type"])
    running = state.running.get(task["type"], 0)
    if limit is not None and running >= limit:
        return f"type {task['type']} is at its concurrency limit ({running} of {limit} running)"
    return None


def _no_agent(task: dict[str, Any], state: QueueState) -> str | None:
    return state.waiting_for.get(task["type"])


def _organ_full(task: dict[str, Any], state: QueueState) -> str | None:
    return state.organ_full.get(task["type"])


WAITING_RULES = (_paused, _not_due, _no_agent, _at_limit, _organ_full)


# ---------------------------------------------------------------------------------------------
# The organs' backlog

# How many due tasks, in claim order, the backlog count reads at most: the organs scale on
# the head of the queue, so a backlog of millions costs each round no more than this.
BACKLOG_SCAN = 100_000


def backlog_by_type(*, scan: int = BACKLOG_SCAN, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """Task type -> its due QUEUED and RETRY tasks (among the first ``scan`` in claim order,
    through tasks_claimable_idx) plus its RUNNING ones (their partial index): what the
    organs scale on, read by rundispatcher every round in one statement."""
    rows = fetch(
        "SELECT type, count(*) AS n FROM ("
        "(SELECT type FROM tasks WHERE status IN ('QUEUED', 'RETRY') "
        "AND (run_after IS NULL OR run_after <= now()) ORDER BY priority DESC, created_at "
        "LIMIT %s) UNION ALL (SELECT type FROM tasks WHERE status = 'RUNNING')) AS backlog "
        "GROUP BY type",
        [scan],
        using=using,
    )
    return {row["type"]: row["n"] for row in rows}
