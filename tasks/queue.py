"""The queue engine: the one home of every statement that changes a task's status.

The API, the admin, the CLI, the dispatchers and the reaper all come through here. Every
statement is PostgreSQL, written out in full next to the function that runs it. Rules the
engine keeps:

- A claim is one short statement (``FOR UPDATE SKIP LOCKED``); no row lock is held while a
  task runs. It skips paused types and those no agent can take now (``waiting_for``, set by
  rundispatcher: :func:`set_waiting_for`); types with a concurrency limit are claimed apart,
  under their ``queue_controls`` row's lock (see :func:`_claim_capped`).
- Every write of an attempt's outcome is fenced by (task id, RUNNING, dispatcher, attempt):
  a stale write changes nothing and returns ``STALE``.
- A cancel of a RUNNING task sets ``cancel_requested``; that attempt then ends CANCELLED
  whatever it returns.
- ``updated_at`` is stamped, and every insert and status change is announced (NOTIFY on
  channel ``seedcore_tasks``), by database triggers (migration 0002), so nothing here does
  either.
- Statements that lock several rows either skip rows locked by others (claim, reap, prune) or
  lock them in id order (renew, release, complete), so they never deadlock one another.
- The hot path (claim, complete_many) runs prepared statements unless the database OPTIONS
  set ``prepare_threshold``; :func:`claim_statement` and :func:`complete_many_statement` give
  their text to ``manage.py benchqueue``'s bare loop.

- Which statuses each statement accepts comes from the declarations next to ``Status`` in
  ``tasks.models``, written into the statements' text (so the partial indexes still apply).

Functions take ``using`` (a database alias) and return plain dicts and strings, so callers
in other processes (Ray actors) never see model instances. This module holds writes only:
reads are ``tasks.selectors`` (a write returns the row as ``selectors.get_task`` reads it),
heartbeats are ``tasks.heartbeats``, and ``tasks.sql`` runs the statements.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction

from tasks.ids import TaskNotFound
from tasks.models import (
    ALL_TYPES,
    CANCELLABLE_STATUSES,
    CLAIMABLE_STATUSES,
    FINISHED_STATUSES,
    RUNNABLE_NOW_STATUSES,
    UNFINISHED_STATUSES,
    Status,
)
from tasks.policy import (
    ERROR_HISTORY_MAX_ENTRIES,
    ERROR_MAX_CHARS,
    RUNS_MAX_ENTRIES,
    TRACEBACK_MAX_CHARS,
    RetentionPolicy,
    RetryPolicy,
    cap_text,
)
from tasks.selectors import DISPATCHER_ALIVE_SQL, TASK_COLUMNS, get_task, queue_control
from tasks.selectors import heartbeat_timeout as heartbeat_timeout_setting
from tasks.sql import Jsonb, execute, fetch, task_uuid
from tasks.validation import validate_concurrency_limit, validate_queue_type

STALE = "STALE"
NOTIFY_CHANNEL = "seedcore_tasks"

# The columns a claim returns, of the row alias ``t`` (in UPDATE … FROM, a bare ``id`` is
# ambiguous).
_T_COLUMNS = ", ".join(f"t.{column}" for column in TASK_COLUMNS.split(", "))


# An attempt's run, as the outcome writes take it: a tuple in this order (or a dict with these
# keys), ``started_at`` and ``finished_at`` in seconds since the epoch (``time.time()``). The
# database builds the ``runs`` entry from it (attempt first, times in ISO 8601), so writing a
# run costs the writer no dict, no JSON and no date formatting.
RUN_FIELDS = (
    "node_id",
    "node_ip",
    "pid",
    "actor_id",
    "organ_id",
    "started_at",
    "finished_at",
    "outcome",
    "log",
)
_RUN_TYPES = ("text", "text", "int", "text", "text", "float8", "float8", "text", "text")
_NO_RUN = (None,) * len(RUN_FIELDS)


def _run_values(run: Sequence[Any] | dict[str, Any] | None) -> tuple:
    if run is None:
        return _NO_RUN
    if isinstance(run, dict):
        return tuple(run.get(name) for name in RUN_FIELDS)
    return tuple(run)


def _run_object(attempt: str, row: str) -> str:
    """SQL for the ``runs`` entry of the run in ``row``'s RUN_FIELDS columns (null when its
    outcome is null: no run)."""
    fields = ", ".join(
        f"'{name}', to_timestamp({row}.{name})"
        if name.endswith("_at")
        else f"'{name}', {row}.{name}"
        for name in RUN_FIELDS
    )
    return (
        f"CASE WHEN {row}.outcome IS NULL THEN NULL "
        f"ELSE jsonb_build_object('attempt', {attempt}, {fields}) END"
    )


def _append_run(run: str, runs: str = "runs") -> str:
    """SQL for ``runs`` with the jsonb ``run`` appended (unchanged when ``run`` is null),
    keeping the newest RUNS_MAX_ENTRIES: while there is room, a plain append, so the hot path
    pays for no more."""
    keep = int(RUNS_MAX_ENTRIES)
    return (
        f"CASE WHEN {run} IS NULL THEN {runs} "
        f"WHEN jsonb_array_length({runs}) < {keep} THEN {runs} || jsonb_build_array({run}) "
        f"ELSE jsonb_path_query_array({runs} || jsonb_build_array({run}), "
        f"'$[last - {keep - 1} to last]') END"
    )


def _sql_list(statuses: Sequence[str]) -> str:
    """A declared set of statuses as an SQL list literal, e.g. ``('QUEUED', 'RETRY')``."""
    assert all(str(status).isalpha() for status in statuses)  # nothing to quote
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"


class TransitionNotAllowed(Exception):
    """The task's current status forbids the change; ``status`` says which it is."""

    def __init__(self, task_id: str, status: str, action: str):
        self.task_id = task_id
        self.status = status
        super().__init__(f"cannot {action} task {task_id}: it is {status}")


# ---------------------------------------------------------------------------------------------
# Enqueue


@dataclass(frozen=True)
class Submitted:
    """What :func:`submit` made: the task, and whether it is new (``created``) or the
    unfinished task that already held the submitted ``unique_key``."""

    task: dict[str, Any]
    created: bool


class UniqueKeyHeld(Exception):
    """Every try found the key held by a task that finished before it could be read (a task
    finishing and being resubmitted, again and again, faster than one submit can run)."""


def submit(
    *,
    type: str,
    params: dict[str, Any] | None = None,
    description: str | None = None,
    domain: str | None = None,
    drift_score: float = 0.0,
    priority: int = 0,
    run_after: datetime | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> Submitted:
    """Queue one task, or, when an unfinished task already holds ``unique_key``, return that
    one (``created`` False): see :func:`enqueue_many` for the rule."""
    spec = {
        "type": type,
        "params": params,
        "description": description,
        "domain": domain,
        "drift_score": drift_score,
        "priority": priority,
        "run_after": run_after,
        "max_attempts": max_attempts,
        "unique_key": unique_key,
    }
    [(task_id, created)] = _insert([_enqueue_row(spec)], using=using)
    return Submitted(get_task(task_id, using=using), created)


def enqueue(*, using: str = DEFAULT_DB_ALIAS, **spec: Any) -> dict[str, Any]:
    """Queue one task and return it as a dict (with a held ``unique_key``, the holder); the
    keyword arguments are :func:`submit`'s."""
    return submit(**spec, using=using).task


def enqueue_many(specs: Iterable[dict[str, Any]], *, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Insert many QUEUED tasks in one statement (one round trip); returns their ids in order.

    Each spec holds ``type`` and optionally ``params``, ``description``, ``domain``,
    ``drift_score``, ``priority``, ``run_after``, ``max_attempts`` and ``unique_key``. The rows
    travel as one array per column (``unnest``), so the statement's text and parameter count
    do not grow with the batch.

    Each spec with a ``unique_key`` keeps the rule on its own: when an unfinished task holds
    the key (an older one, or an earlier spec of the same batch), no row is inserted for it
    and its place in the answer holds the holder's id.
    """
    return [task_id for task_id, _ in _insert([_enqueue_row(spec) for spec in specs], using=using)]


# Rounds of insert-then-read a keyed spec gets: a round only fails when the key's holder
# finished between the insert that met it and the read that looked for it.
_UNIQUE_KEY_ROUNDS = 5


def _insert(rows: list[tuple], *, using: str) -> list[tuple[str, bool]]:
    """Insert ``rows`` (see :func:`_enqueue_row`); returns (id, created) per row, in order,
    where a row whose ``unique_key`` was held gets the holder's id and created False."""
    answers: list[tuple[str, bool] | None] = [None] * len(rows)
    pending = list(range(len(rows)))
    for _ in range(_UNIQUE_KEY_ROUNDS):
        if not pending:
            break
        columns = [list(column) for column in zip(*(rows[i] for i in pending), strict=True)]
        columns[2] = [Jsonb(value) for value in columns[2]]
        # Prepared: its text never changes with the batch, and an enqueue is a handler's
        # start too (parsing and planning it was a fifth of the insert).
        inserted = {row["id"] for row in fetch(_ENQUEUE_SQL, columns, using=using, prepare=True)}
        keys = {rows[i][_KEY] for i in pending if str(rows[i][0]) not in inserted}
        holders = {}
        if keys:
            holders = {
                row["unique_key"]: row["id"]
                for row in fetch(_HOLDERS_SQL, [sorted(keys)], using=using)
            }
        still_pending = []
        for i in pending:
            task_id, key = str(rows[i][0]), rows[i][_KEY]
            if task_id in inserted:
                answers[i] = (task_id, True)
            elif key in holders:
                answers[i] = (holders[key], False)
            else:
                still_pending.append(i)  # its holder finished meanwhile: insert again
        pending = still_pending
    if not pending:
        return answers  # type: ignore[return-value]
    raise UniqueKeyHeld(
        f"unique_key {rows[pending[0]][_KEY]!r} kept changing hands; submit it again"
    )


# A row whose unique_key an unfinished task holds is skipped (the condition repeats the
# partial unique index's, so PostgreSQL picks that index as the arbiter).
_UNFINISHED = f"status IN {_sql_list(UNFINISHED_STATUSES)}"
_ENQUEUE_SQL = (
    "INSERT INTO tasks (id, type, params, description, domain, drift_score, priority, "
    "run_after, max_attempts, unique_key) SELECT * FROM unnest(%s::uuid[], %s::text[], "
    "%s::jsonb[], %s::text[], %s::text[], %s::float8[], %s::int[], %s::timestamptz[], "
    "%s::int[], %s::text[]) "
    f"ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND {_UNFINISHED} DO NOTHING "
    "RETURNING id"
)
_HOLDERS_SQL = f"SELECT unique_key, id FROM tasks WHERE unique_key = ANY(%s) AND {_UNFINISHED}"
_KEY = 9  # the unique_key's place in a row


def _enqueue_row(spec: dict[str, Any]) -> tuple:
    """One task's values, in the column order of the INSERT above."""
    max_attempts = spec.get("max_attempts")
    return (
        uuid.uuid4(),
        str(spec["type"]),
        spec.get("params") or {},
        spec.get("description"),
        spec.get("domain"),
        float(spec.get("drift_score") or 0.0),
        int(spec.get("priority") or 0),
        spec.get("run_after"),
        None if max_attempts is None else int(max_attempts),
        spec.get("unique_key"),
    )


# ---------------------------------------------------------------------------------------------
# Claim, renew, release


def claim(
    *,
    dispatcher: str,
    batch: int,
    lease_seconds: float | None = None,
    durable: bool = True,
    using: str = DEFAULT_DB_ALIAS,
) -> list[dict[str, Any]]:
    """Claim up to ``batch`` claimable tasks for ``dispatcher``: RUNNING, attempts + 1.

    Claimable: QUEUED or RETRY with ``run_after`` null or past, of a type not paused (and
    nothing while all claiming is paused); highest priority, then oldest first. Returns the
    claimed rows as plain dicts; ``attempts`` is the fencing token that every later write for
    this attempt must present.

    Every type without a concurrency limit is claimed by one statement, which also says
    whether capped types exist; so with no caps a claim is one statement, as before caps.
    Capped types are claimed under their control row's lock (:func:`_claim_capped`): first
    when the previous claim on this connection saw capped types (so a backlog of other types
    cannot starve them), else when the statement saw them and the batch has room left.

    ``durable=False`` (the dispatchers) commits claims on this connection without waiting for
    the WAL to reach the disk: a claim lost to a server crash only means its task is claimed
    and run again, as a lost dispatcher already means; the wait was a fifth of a handler's
    start at low load. Outcome writes stay durable.
    """
    lease = lease_seconds if lease_seconds is not None else settings.SEEDCORE_LEASE_SECONDS
    connection = connections[using]
    if not durable:
        _commit_without_waiting(connection, using=using)
    capped_first = getattr(connection, "_seedcore_capped_types", False)
    capped: list[dict[str, Any]] = []
    if capped_first:
        capped = _claim_capped(dispatcher=dispatcher, batch=batch, lease=lease, using=using)
    rows: list[dict[str, Any]] = []
    capped_types = capped_first
    if batch > len(capped):
        answer = fetch(
            _CLAIM_SQL, [batch - len(capped), dispatcher, lease], using=using, prepare=True
        )
        capped_types = answer[0]["capped_types"]
        rows = [row for row in answer if row["id"] is not None]
        for row in rows:
            del row["capped_types"]
    connection._seedcore_capped_types = capped_types
    if not capped_first and capped_types and len(rows) < batch:
        # Room left and capped types wait: not a busy round, so the extra look is cheap.
        capped = _claim_capped(
            dispatcher=dispatcher, batch=batch - len(rows), lease=lease, using=using
        )
    return capped + rows


def _commit_without_waiting(connection, *, using: str) -> None:
    # Once per database session: a reconnect starts a session with the server's default.
    connection.ensure_connection()
    if getattr(connection, "_seedcore_commits_async", None) is not connection.connection:
        execute("SET synchronous_commit = off", using=using)
        connection._seedcore_commits_async = connection.connection


def claim_statement() -> str:
    """The statement :func:`claim` runs when no type is capped (``%s`` placeholders), for the
    benchmark's bare loop. Parameters: batch, dispatcher, lease seconds. It answers the
    claimed rows, or one row whose ``id`` is null when it claimed nothing."""
    return _CLAIM_SQL


# A type the one-statement claim leaves alone: paused, waiting for an agent (waiting_for), or
# capped (claimed by _claim_capped).
# NOT IN over the control rows is a hashed subplan, run once per statement, which the planner
# estimates as keeping half the rows, so it still reads tasks_claimable_idx in claim order
# (``type <> ALL (array)`` of the same rows it estimated as keeping none, and chose to scan
# and sort the whole table). The key is never NULL, so NOT IN has no NULL surprise.
_HELD_TYPES = (
    "SELECT c.type FROM queue_controls AS c WHERE c.paused OR c.waiting_for IS NOT NULL "
    "OR c.concurrency_limit IS NOT NULL OR c.declared_concurrency IS NOT NULL"
)
_ALL_PAUSED = f"EXISTS (SELECT FROM queue_controls WHERE type = '{ALL_TYPES}' AND paused)"
_CAPPED_TYPES_EXIST = (
    f"EXISTS (SELECT FROM queue_controls WHERE NOT paused AND type <> '{ALL_TYPES}' "
    "AND waiting_for IS NULL AND coalesce(concurrency_limit, declared_concurrency) IS NOT NULL)"
)

# SKIP LOCKED: concurrent claims pass over each other's rows instead of queueing behind them.
# The picked rows are read through tasks_claimable_idx, in claim order (the status list is a
# literal, as in the index's condition, so the planner can use it). The queue controls are
# read once per statement (uncorrelated subqueries over a table of a few rows), so they cost
# the hot path next to nothing, and a pause holds from the very next claim.
# The picked rows are then updated through one primary key scan for all their ids, never a
# join with picked: once prepared, the statement may run a generic plan, which cannot know
# the LIMIT and guesses a tenth of the claimable rows, and with a join it then hashed picked
# against a read of the whole table. An array of ids is looked up by the index whatever its
# guessed size (and the claim cost PostgreSQL 33 µs of CPU per task rather than 44).
_CLAIM_SQL = (
    f"WITH picked AS (SELECT id FROM tasks WHERE status IN {_sql_list(CLAIMABLE_STATUSES)} "
    "AND (run_after IS NULL OR run_after <= now()) "
    f"AND type NOT IN ({_HELD_TYPES}) AND NOT {_ALL_PAUSED} "
    "ORDER BY priority DESC, created_at LIMIT %s FOR UPDATE SKIP LOCKED), "
    "claimed AS (UPDATE tasks AS t SET status = 'RUNNING', locked_by = %s, locked_at = now(), "
    "lease_expires_at = now() + %s * interval '1 second', attempts = t.attempts + 1, "
    "cancel_requested = false "
    f"WHERE t.id = ANY (ARRAY(SELECT id FROM picked)) RETURNING {_T_COLUMNS}) "
    # The claimed rows in claim order, each saying whether capped types exist; one row of
    # nulls but that answer when nothing was claimed.
    f"SELECT claimed.*, {_CAPPED_TYPES_EXIST} AS capped_types "
    "FROM (SELECT) AS answer LEFT JOIN claimed ON true "
    "ORDER BY claimed.priority DESC, claimed.created_at"
)


def _claim_capped(*, dispatcher: str, batch: int, lease: float, using: str) -> list[dict[str, Any]]:
    """Claim up to ``batch`` tasks of the types that have a concurrency limit, never more of
    a type than its limit minus those RUNNING.

    Why the limit holds with any number of dispatchers claiming at once: a task becomes
    RUNNING only by a claim, and a capped type is claimed only here (the one-statement claim
    skips capped types), only while this transaction holds the type's ``queue_controls`` row
    lock. The RUNNING count is read by a second statement, which in READ COMMITTED takes its
    snapshot after the lock was granted, so it sees every claim the previous holder
    committed; and no one else can claim the type until this transaction commits. So
    RUNNING + claimed now <= limit. Other claimers SKIP LOCKED rows, so they pass over a type
    being claimed rather than wait for it; only capped types pay for the lock. (Tasks already
    RUNNING when a limit is set or lowered finish; the limit governs later claims.)
    """
    with transaction.atomic(using=using):
        held = fetch(_LOCK_CAPPED_SQL, using=using)
        if not held:
            return []
        types = [row["type"] for row in held]
        limits = [row["limit"] for row in held]
        return fetch(_CLAIM_CAPPED_SQL, [types, limits, batch, dispatcher, lease], using=using)


# In type order, so two claimers that block (an operator's update) never deadlock.
_LOCK_CAPPED_SQL = (
    "SELECT type, coalesce(concurrency_limit, declared_concurrency) AS limit "
    f"FROM queue_controls WHERE NOT paused AND type <> '{ALL_TYPES}' AND waiting_for IS NULL "
    f"AND coalesce(concurrency_limit, declared_concurrency) IS NOT NULL AND NOT {_ALL_PAUSED} "
    "ORDER BY type FOR UPDATE SKIP LOCKED"
)

# Each capped type's tasks are read through tasks_claimable_idx in claim order, filtered by
# type: cheap while they are near the head of the queue; a per-type index would keep it cheap
# behind any backlog, but every insert would pay for it.
# locked_at is this statement's start, after the lock was granted (now() is the transaction's
# start, before it), so the start of a capped task is never earlier than the end of the task
# whose slot it took.
_CLAIM_CAPPED_SQL = (
    "WITH capped AS (SELECT * FROM unnest(%s::text[], %s::int[]) AS capped(type, cap)), "
    "room AS (SELECT capped.type, capped.cap - (SELECT count(*) FROM tasks AS r "
    "WHERE r.status = 'RUNNING' AND r.type = capped.type) AS free FROM capped), "
    "picked AS (SELECT p.id FROM room CROSS JOIN LATERAL (SELECT id FROM tasks "
    f"WHERE status IN {_sql_list(CLAIMABLE_STATUSES)} AND type = room.type "
    "AND (run_after IS NULL OR run_after <= now()) ORDER BY priority DESC, created_at "
    "LIMIT greatest(room.free, 0) FOR UPDATE SKIP LOCKED) AS p LIMIT %s) "
    "UPDATE tasks AS t SET status = 'RUNNING', locked_by = %s, "
    "locked_at = statement_timestamp(), "
    "lease_expires_at = now() + %s * interval '1 second', attempts = t.attempts + 1, "
    "cancel_requested = false "
    f"FROM picked WHERE t.id = picked.id RETURNING {_T_COLUMNS}"
)


def renew_leases(
    *,
    dispatcher: str,
    attempts: dict[str, int],
    lease_seconds: float | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> dict[str, bool]:
    """Extend the leases of the attempts ``dispatcher`` still holds.

    ``attempts`` maps task id to attempt. Returns, for each attempt still held, whether a
    cancel has been requested; an attempt missing from the answer is no longer held (it was
    reaped or released) and its dispatcher should stop it.
    """
    if not attempts:
        return {}
    lease = lease_seconds if lease_seconds is not None else settings.SEEDCORE_LEASE_SECONDS
    ids = [task_uuid(task_id) for task_id in attempts]
    rows = fetch(_RENEW_SQL, [ids, list(attempts.values()), dispatcher, lease], using=using)
    return {row["id"]: row["cancel_requested"] for row in rows}


_RENEW_SQL = (
    "WITH held AS (SELECT * FROM unnest(%s::uuid[], %s::int[]) AS held(id, attempt)), "
    "locked AS (SELECT t.id FROM tasks AS t "
    "JOIN held ON t.id = held.id AND t.attempts = held.attempt "
    "WHERE t.status = 'RUNNING' AND t.locked_by = %s ORDER BY t.id FOR UPDATE OF t) "
    "UPDATE tasks AS t SET lease_expires_at = now() + %s * interval '1 second' FROM locked "
    "WHERE t.id = locked.id RETURNING t.id, t.cancel_requested"
)


def release(
    *, dispatcher: str, attempts: dict[str, int], using: str = DEFAULT_DB_ALIAS
) -> list[str]:
    """Give attempts that never ran (or were stopped by a shutdown) back to the queue.

    The task goes back to QUEUED (CANCELLED if a cancel was requested) and the attempt is
    not counted. Returns the ids released, in id order.
    """
    if not attempts:
        return []
    ids = [task_uuid(task_id) for task_id in attempts]
    rows = fetch(_RELEASE_SQL, [ids, list(attempts.values()), dispatcher], using=using)
    return sorted(row["id"] for row in rows)


_RELEASE_SQL = (
    "WITH held AS (SELECT * FROM unnest(%s::uuid[], %s::int[]) AS held(id, attempt)), "
    "locked AS (SELECT t.id FROM tasks AS t "
    "JOIN held ON t.id = held.id AND t.attempts = held.attempt "
    "WHERE t.status = 'RUNNING' AND t.locked_by = %s ORDER BY t.id FOR UPDATE OF t) "
    "UPDATE tasks AS t SET "
    "status = CASE WHEN t.cancel_requested THEN 'CANCELLED' ELSE 'QUEUED' END, "
    "attempts = t.attempts - 1, locked_by = NULL, locked_at = NULL, lease_expires_at = NULL "
    "FROM locked WHERE t.id = locked.id RETURNING t.id"
)


# ---------------------------------------------------------------------------------------------
# Fenced outcome writes


def complete(
    *, task_id: str, dispatcher: str, attempt: int, result: Any, using: str = DEFAULT_DB_ALIAS
) -> str:
    """Record a successful attempt. Returns COMPLETED, CANCELLED (a cancel was requested
    meanwhile; the result is kept) or STALE (the attempt no longer owns the task)."""
    return complete_many(
        dispatcher=dispatcher, results=[(task_id, attempt, result)], using=using
    ).get(str(task_id), STALE)


def complete_many(
    *,
    dispatcher: str,
    results: Sequence[tuple],
    using: str = DEFAULT_DB_ALIAS,
) -> dict[str, str]:
    """Record many successful attempts in one statement.

    ``results`` holds (task id, attempt, result) or (task id, attempt, result, run), where
    ``run`` (RUN_FIELDS, or None) joins the task's ``runs`` by the same statement. Returns
    task id → COMPLETED or CANCELLED for each write that took effect; ids missing from the
    answer were stale.
    """
    if not results:
        return {}
    # One JSON document of positional arrays, not a dozen SQL arrays: psycopg dumps an array
    # element by element in Python, which cost the dispatcher more than the rest of the write.
    # An item without a run simply ends after its result.
    done = json.dumps(
        [
            [str(task_uuid(item[0])), item[1], item[2], *_run_values(item[3])]
            if len(item) > 3 and item[3] is not None
            else [str(task_uuid(item[0])), item[1], item[2]]
            for item in results
        ]
    )
    rows = fetch(_COMPLETE_MANY_SQL, [done, dispatcher], using=using, prepare=True)
    return {row["id"]: row["status"] for row in rows}


def complete_many_statement() -> str:
    """The statement :func:`complete_many` runs (``%s`` placeholders), for the benchmark's
    bare loop. Parameters: a JSON array of ``[id, attempt, result, *RUN_FIELDS]`` (the run's
    fields may be left off), then the dispatcher."""
    return _COMPLETE_MANY_SQL


# The run's fields of a complete_many item, read by position after id, attempt and result.
_RUN_COLUMNS = ", ".join(
    f"(d->>{index})::{kind} AS {name}"
    for index, (name, kind) in enumerate(zip(RUN_FIELDS, _RUN_TYPES, strict=True), start=3)
)
# The attempt's run joins the task's runs in the same fenced statement: no second write.
# Each row is found by its primary key, one lookup per outcome, in id order (so two writers
# lock in the same order), and the fence (RUNNING, this dispatcher, this attempt) is checked
# on the row once locked. Filtering on status where the rows are looked up let the planner
# read every RUNNING row instead (the partial index on RUNNING rows, or a hash join over them),
# which it did whenever its statistics said RUNNING rows were few, and each such read also
# went through the dead entries every task left behind since the last vacuum: a burst's writes
# cost more the further it went. A LATERAL subquery with a LIMIT is never flattened into a
# join, and an id is all it can look rows up by.
# The locked rows are then updated through a primary key lookup each (the planner's estimate
# of them is one row, so it never reads the table for them). No `t.id = ANY(ARRAY(SELECT id
# FROM locked))` beside the join to pin that: PostgreSQL made the array an index condition of
# every lookup, sorting all of it again for each row (a third of a 400-row write's time).
_COMPLETE_MANY_SQL = (
    "WITH done AS (SELECT (d->>0)::uuid AS id, (d->>1)::int AS attempt, d->2 AS result, "
    f"{_RUN_COLUMNS} FROM jsonb_array_elements(%s::jsonb) AS d), "
    "locked AS MATERIALIZED "
    f"(SELECT held.id, done.result, {_run_object('done.attempt', 'done')} AS run "
    "FROM (SELECT * FROM done ORDER BY id) AS done CROSS JOIN LATERAL "
    "(SELECT t.id, t.status, t.attempts, t.locked_by FROM tasks AS t WHERE t.id = done.id "
    "LIMIT 1 FOR UPDATE) AS held "
    "WHERE held.attempts = done.attempt AND held.status = 'RUNNING' AND held.locked_by = %s) "
    "UPDATE tasks AS t SET "
    "status = CASE WHEN t.cancel_requested THEN 'CANCELLED' ELSE 'COMPLETED' END, "
    "lease_expires_at = NULL, error = NULL, result = locked.result, "
    f"runs = {_append_run('locked.run', 't.runs')} "
    "FROM locked WHERE t.id = locked.id "
    "RETURNING t.id, t.status"
)


def fail(
    *,
    task_id: str,
    dispatcher: str,
    attempt: int,
    error: str,
    traceback: str = "",
    permanent: bool = False,
    max_attempts: int | None = None,
    policy: RetryPolicy | None = None,
    run: Sequence[Any] | dict[str, Any] | None = None,
    system: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """Record a failed attempt: RETRY with backoff, or FAILED at the last attempt or on a
    permanent error; CANCELLED if a cancel was requested; STALE if no longer owned.

    ``max_attempts`` is the handler's cap; the task's own ``max_attempts`` column wins over it,
    and the policy's (SEEDCORE_MAX_ATTEMPTS) applies when neither is set. ``run``
    (RUN_FIELDS, or None) joins the task's runs.

    ``system`` (the kind of a SYSTEM failure: Ray lost the attempt) makes it a system failure
    instead: RETRY at once, counted in ``system_failures`` rather than against the attempts,
    and FAILED only once more than the policy's ``max_system_retries`` were lost.
    """
    policy = policy or RetryPolicy.from_settings()
    if max_attempts is not None:
        policy = replace(policy, max_attempts=max_attempts)
    with transaction.atomic(using=using):
        rows = fetch(
            "SELECT id, attempts, max_attempts, locked_by, cancel_requested, system_failures "
            "FROM tasks WHERE id = %s AND attempts = %s AND status = 'RUNNING' "
            "AND locked_by = %s FOR UPDATE",
            [task_uuid(task_id), attempt, dispatcher],
            using=using,
        )
        if not rows:
            return STALE
        return _end_failed_attempt(
            rows[0],
            error=error,
            traceback=traceback,
            permanent=permanent,
            policy=policy,
            unlock=False,
            run=run,
            system=system,
            using=using,
        )


# ---------------------------------------------------------------------------------------------
# Reaper


def reap(
    *,
    heartbeat_timeout: float | None = None,
    policy: RetryPolicy | None = None,
    limit: int = 500,
    using: str = DEFAULT_DB_ALIAS,
) -> list[dict[str, Any]]:
    """Send RUNNING tasks whose lease ran out, or whose dispatcher is dead (its heartbeat row
    missing, or not alive by ``tasks.selectors``' rule), back to RETRY (FAILED at the last
    attempt; CANCELLED if a cancel was requested). Returns ``{"id", "status", "reason"}`` per
    task. ``heartbeat_timeout`` overrides SEEDCORE_HEARTBEAT_TIMEOUT (tests)."""
    policy = policy or RetryPolicy.from_settings()
    if heartbeat_timeout is None:
        heartbeat_timeout = heartbeat_timeout_setting()
    reaped = []
    with transaction.atomic(using=using):
        for task in fetch(_REAPABLE_SQL, [heartbeat_timeout, limit], using=using):
            attempt, dispatcher = task["attempts"], task["locked_by"]
            if task["reason"] == "lease":
                error = f"reaped: lease of attempt {attempt} ran out on {dispatcher}"
            else:
                error = f"reaped: dispatcher {dispatcher} stopped sending heartbeats"
            # Unlike a dispatcher's own failure, a reaped task keeps no locked_by: nobody holds it.
            status = _end_failed_attempt(task, error=error, policy=policy, unlock=True, using=using)
            reaped.append({"id": task["id"], "status": status, "reason": error})
    return reaped


# SKIP LOCKED: a task whose dispatcher is writing its outcome right now is left to that write.
_REAPABLE_SQL = (
    "SELECT t.id, t.attempts, t.max_attempts, t.locked_by, t.cancel_requested, "
    "t.system_failures, CASE WHEN t.lease_expires_at IS NULL OR t.lease_expires_at < now() "
    "THEN 'lease' ELSE 'heartbeat' END AS reason FROM tasks AS t "
    "LEFT JOIN dispatchers AS w ON w.name = t.locked_by "
    "WHERE t.status = 'RUNNING' AND (t.lease_expires_at IS NULL OR t.lease_expires_at < now() "
    f"OR w.name IS NULL OR NOT ({DISPATCHER_ALIVE_SQL.format(row='w')})) "
    "LIMIT %s FOR UPDATE OF t SKIP LOCKED"
)


# ---------------------------------------------------------------------------------------------
# A failed attempt, as fail() and reap() both end one


def _end_failed_attempt(
    task: dict[str, Any],
    *,
    error: str,
    traceback: str = "",
    permanent: bool = False,
    policy: RetryPolicy,
    unlock: bool,
    run: Sequence[Any] | dict[str, Any] | None = None,
    system: str | None = None,
    using: str,
) -> str:
    """End the RUNNING attempt of ``task`` as failed and return the status written.

    ``task`` holds the row's id, attempts, max_attempts, locked_by, cancel_requested and
    system_failures, read under the caller's row lock. The task goes to RETRY after the
    policy's backoff, FAILED at the last attempt or when ``permanent``, CANCELLED if a cancel
    was requested; the error joins its error history, which keeps its newest
    ``ERROR_HISTORY_MAX_ENTRIES``; error and traceback are cut to ``ERROR_MAX_CHARS`` and
    ``TRACEBACK_MAX_CHARS``. ``unlock`` also clears ``locked_by``; ``run`` joins the runs.

    The attempts budget is ``attempts - system_failures``: the claim counts every attempt
    (the count is the fencing token), and attempts Ray lost are given back here. A ``system``
    failure (its kind) goes to RETRY at once, or FAILED once more than the policy's
    ``max_system_retries`` were lost, whatever the budget.
    """
    error = cap_text(error, ERROR_MAX_CHARS)
    traceback = cap_text(traceback, TRACEBACK_MAX_CHARS)
    lost = task.get("system_failures") or 0
    if system is not None:
        lost += 1
        status, delay = policy.after_system_failure(system_failures=lost)
        if status == Status.FAILED:
            error = cap_text(
                f"Ray lost {lost} attempts, more than SEEDCORE_MAX_SYSTEM_RETRIES "
                f"({policy.max_system_retries}); the last: {error}",
                ERROR_MAX_CHARS,
            )
    else:
        status, delay = policy.after_failure(
            attempts=task["attempts"] - lost,
            task_max_attempts=task["max_attempts"],
            permanent=permanent,
        )
    if task["cancel_requested"]:
        status, delay = Status.CANCELLED.value, None
    entry = {
        "attempt": task["attempts"],
        "error": error,
        "traceback": traceback,
        "dispatcher": task["locked_by"],
        "at": datetime.now(UTC).isoformat(),
        "outcome": status,
    }
    if system is not None:
        entry["system"] = system
    locked_by = None if unlock else task["locked_by"]
    execute(
        _FAILED_ATTEMPT_SQL,
        [
            status,
            error,
            delay,
            locked_by,
            Jsonb(entry),
            ERROR_HISTORY_MAX_ENTRIES,
            *_run_values(run),
            0 if system is None else 1,
            task["id"],
            task["attempts"],
        ],
        using=using,
    )
    return status


_RUN_VALUES = ", ".join(
    f"%s::{kind} AS {name}" for name, kind in zip(RUN_FIELDS, _RUN_TYPES, strict=True)
)
# A null delay (FAILED, CANCELLED) leaves run_after as it was. The history gets the new entry
# and keeps its newest N (the entries say their attempt and time); so do the runs.
_FAILED_ATTEMPT_SQL = (
    "UPDATE tasks SET status = %s, error = %s, "
    "run_after = coalesce(now() + %s::float8 * interval '1 second', run_after), "
    "lease_expires_at = NULL, locked_by = %s, "
    "error_history = (SELECT coalesce(jsonb_agg(h.entry ORDER BY h.n), '[]'::jsonb) "
    "FROM jsonb_array_elements(error_history || jsonb_build_array(%s::jsonb)) "
    "WITH ORDINALITY AS h(entry, n) "
    "WHERE h.n > jsonb_array_length(error_history) + 1 - %s), "
    f"runs = (SELECT {_append_run('x.run')} FROM (SELECT {_run_object('attempts', 'r')} AS run "
    f"FROM (SELECT {_RUN_VALUES}) AS r) AS x), "
    "system_failures = system_failures + %s "
    "WHERE id = %s AND attempts = %s AND status = 'RUNNING'"
)


# ---------------------------------------------------------------------------------------------
# Operator actions


# Each operator action as two pieces of SQL over the row alias ``t``: the statuses it accepts and
# what it sets. The single-task statements below and the batches of apply_to_batch share them.
_CANCELLABLE = f"t.status IN {_sql_list(CANCELLABLE_STATUSES)}"
_CANCEL_SET = (
    "status = CASE WHEN t.status = 'RUNNING' THEN t.status ELSE 'CANCELLED' END, "
    "cancel_requested = CASE WHEN t.status = 'RUNNING' THEN true ELSE t.cancel_requested END"
)
_RUNNABLE_NOW = f"t.status IN {_sql_list(RUNNABLE_NOW_STATUSES)}"
_RUN_NOW_SET = (
    "status = 'QUEUED', run_after = now(), attempts = 0, system_failures = 0, "
    "cancel_requested = false, "
    "locked_by = NULL, locked_at = NULL, lease_expires_at = NULL, error = NULL, result = NULL"
)
OPERATOR_ACTIONS = {"cancel": (_CANCELLABLE, _CANCEL_SET), "retry": (_RUNNABLE_NOW, _RUN_NOW_SET)}


def cancel(task_id: str, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Cancel a task. QUEUED or RETRY become CANCELLED at once; a RUNNING task gets
    ``cancel_requested`` and ends CANCELLED when its attempt stops; CANCELLED stays so.
    COMPLETED and FAILED raise :class:`TransitionNotAllowed`."""
    with transaction.atomic(using=using):
        rows = fetch(
            f"UPDATE tasks AS t SET {_CANCEL_SET} WHERE t.id = %s AND {_CANCELLABLE} "
            "RETURNING t.id",
            [task_uuid(task_id)],
            using=using,
        )
        if not rows:
            current = _current_status(task_id, using=using)
            if current != Status.CANCELLED:
                raise TransitionNotAllowed(str(task_id), current, "cancel")
    return get_task(task_id, using=using)


def run_now(task_id: str, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Queue a FAILED, CANCELLED, RETRY or QUEUED task to run at once, with a fresh set of
    attempts: ``attempts`` goes back to 0 (the next claim is attempt 1), ``error`` and
    ``result`` are cleared, and ``error_history`` keeps every earlier attempt.
    RUNNING and COMPLETED raise :class:`TransitionNotAllowed`."""
    with transaction.atomic(using=using):
        try:
            with transaction.atomic(using=using):  # a savepoint, to read the holder after
                rows = fetch(
                    f"UPDATE tasks AS t SET {_RUN_NOW_SET} WHERE t.id = %s AND {_RUNNABLE_NOW} "
                    "RETURNING t.id",
                    [task_uuid(task_id)],
                    using=using,
                )
        except IntegrityError as exc:
            if _constraint_of(exc) != _UNIQUE_KEY_INDEX:
                raise
            raise _unique_key_taken(task_id, using=using) from None
        if not rows:
            current = _current_status(task_id, using=using)
            raise TransitionNotAllowed(str(task_id), current, "run")
    return get_task(task_id, using=using)


# A retry must not make a second unfinished task with one unique_key: a task whose key an
# unfinished task holds, or a second one of the batch with the same key, is left as it is
# (counted as skipped) rather than failing the whole batch on the partial unique index.
_KEY_FREE = (
    "AND (locked.unique_key IS NULL OR (NOT EXISTS (SELECT 1 FROM tasks AS h "
    f"WHERE h.unique_key = locked.unique_key AND h.id <> locked.id AND h.{_UNFINISHED}) "
    "AND locked.id = "
    "(SELECT min(l.id::text)::uuid FROM locked AS l WHERE l.unique_key = locked.unique_key))) "
)


def apply_to_batch(
    action: str, picked_sql: str, picked_params: Sequence[Any], *, using: str = DEFAULT_DB_ALIAS
) -> dict[str, Any]:
    """Apply an operator action (``cancel`` or ``retry``, as :func:`cancel` and :func:`run_now`
    do) to a batch of tasks in one statement, so one short transaction.

    ``picked_sql`` selects the batch's ``id`` and ``created_at`` (``tasks.selectors``
    builds it from a filter). Each picked row is locked in id order, as the engine's other
    multi-row statements lock, and the action's status rule is checked again under the lock:
    a task whose status changed meanwhile to one the action does not accept is left as it is.
    Returns ``picked`` and ``changed`` counts, and the last picked (created_at, id), where
    the next batch starts.
    """
    accepts, sets = OPERATOR_ACTIONS[action]
    sql = (
        f"WITH picked AS MATERIALIZED ({picked_sql}), "
        "locked AS (SELECT t.id, t.unique_key FROM tasks AS t JOIN picked ON t.id = picked.id "
        f"WHERE {accepts} ORDER BY t.id FOR UPDATE OF t), "
        f"changed AS (UPDATE tasks AS t SET {sets} FROM locked WHERE t.id = locked.id "
        f"{_KEY_FREE if action == 'retry' else ''}RETURNING t.id), "
        "last AS (SELECT created_at, id FROM picked ORDER BY created_at DESC, id DESC LIMIT 1) "
        "SELECT (SELECT count(*) FROM picked) AS picked, (SELECT count(*) FROM changed) AS "
        "changed, (SELECT created_at FROM last) AS last_created_at, (SELECT id FROM last) AS "
        "last_id"
    )
    return fetch(sql, picked_params, using=using)[0]


class UniqueKeyTaken(TransitionNotAllowed):
    """Running the task again would make a second unfinished task with its ``unique_key``;
    ``holder_id`` is the unfinished task that holds it."""

    def __init__(self, task_id: str, status: str, unique_key: str, holder_id: str | None):
        super().__init__(task_id, status, "run")
        self.unique_key = unique_key
        self.holder_id = holder_id
        holder = f"task {holder_id}" if holder_id else "another task"
        self.args = (
            f"cannot run task {task_id}: its unique_key {unique_key!r} is held by unfinished "
            f"{holder}; cancel that one or wait for it to finish",
        )


# The partial unique index on tasks.unique_key (tasks.models), as its violations name it.
_UNIQUE_KEY_INDEX = "tasks_unique_key_unfinished"


def _constraint_of(exc: IntegrityError) -> str | None:
    """The constraint a violation names (psycopg's diagnostics, under Django's error)."""
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)


def _unique_key_taken(task_id: str, *, using: str) -> UniqueKeyTaken:
    rows = fetch(
        "SELECT t.status, t.unique_key, h.id AS holder_id FROM tasks AS t "
        "LEFT JOIN tasks AS h ON h.unique_key = t.unique_key AND h.id <> t.id "
        f"AND h.{_UNFINISHED} WHERE t.id = %s LIMIT 1",
        [task_uuid(task_id)],
        using=using,
    )
    row = rows[0]
    return UniqueKeyTaken(str(task_id), row["status"], row["unique_key"], row["holder_id"])


def _current_status(task_id: str, *, using: str) -> str:
    rows = fetch("SELECT status FROM tasks WHERE id = %s", [task_uuid(task_id)], using=using)
    if not rows:
        raise TaskNotFound(f"no task with ID {task_id}")
    return rows[0]["status"]


# ---------------------------------------------------------------------------------------------
# Queue controls: pause, resume, concurrency limits (the queue_controls table)


def pause(type: str | None = None, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Stop claiming tasks of ``type`` (every type when None) from the next claim on; tasks
    already RUNNING finish. A type with no tasks yet may be paused. Returns the control."""
    key = _control_key(type)
    execute(
        "INSERT INTO queue_controls (type, paused, paused_at) VALUES (%s, true, now()) "
        "ON CONFLICT (type) DO UPDATE SET paused = true, "
        "paused_at = coalesce(queue_controls.paused_at, now())",
        [key],
        using=using,
    )
    return queue_control(key, using=using)


def resume(type: str | None = None, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Claim ``type`` (every type when None) again, and wake every dispatcher at once."""
    key = _control_key(type)
    with transaction.atomic(using=using):
        execute(
            "UPDATE queue_controls SET paused = false, paused_at = NULL WHERE type = %s",
            [key],
            using=using,
        )
        _forget_idle_control(key, using=using)
        _wake_dispatchers(using=using)
    return queue_control(key, using=using)


def set_concurrency_limit(
    type: str, limit: int | None, *, using: str = DEFAULT_DB_ALIAS
) -> dict[str, Any]:
    """Override how many tasks of ``type`` may run at once across all dispatchers; None
    clears the override (the handler's declared limit, if any, holds again)."""
    key = validate_queue_type(type)
    limit = validate_concurrency_limit(limit)
    with transaction.atomic(using=using):
        execute(
            "INSERT INTO queue_controls (type, concurrency_limit) VALUES (%s, %s) "
            "ON CONFLICT (type) DO UPDATE SET concurrency_limit = excluded.concurrency_limit",
            [key, limit],
            using=using,
        )
        _forget_idle_control(key, using=using)
        _wake_dispatchers(using=using)  # a raised or cleared limit may free tasks at once
    return queue_control(key, using=using)


def declare_concurrency(limits: dict[str, int], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Record the limits handlers declare in code (``@handler(..., concurrency=N)``), as
    ``rundispatcher`` finds them at start; a type no longer declaring one loses it."""
    types = sorted(limits)
    with transaction.atomic(using=using):
        execute(
            "UPDATE queue_controls SET declared_concurrency = NULL "
            "WHERE declared_concurrency IS NOT NULL AND NOT (type = ANY(%s::text[]))",
            [types],
            using=using,
        )
        execute(
            "INSERT INTO queue_controls (type, declared_concurrency) "
            "SELECT * FROM unnest(%s::text[], %s::int[]) "
            "ON CONFLICT (type) DO UPDATE SET declared_concurrency = excluded.declared_concurrency",
            [types, [validate_concurrency_limit(limits[t]) for t in types]],
            using=using,
        )
        execute(
            "DELETE FROM queue_controls WHERE NOT paused AND concurrency_limit IS NULL "
            "AND declared_concurrency IS NULL AND waiting_for IS NULL",
            using=using,
        )


def set_waiting_for(holds: dict[str, str], *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Record the types no agent can take now (type -> what is missing, in a sentence), as
    ``rundispatcher`` finds them every round; every other type's hold is lifted. The claim
    skips held types, so their tasks stay QUEUED, attempts unchanged. Writes only what
    changed, and wakes the dispatchers when a hold is lifted; returns whether anything
    changed."""
    with transaction.atomic(using=using):
        lifted, held = _note_types("waiting_for", holds, using=using)
        if lifted:
            _wake_dispatchers(using=using)
    return bool(lifted or held)


def set_organ_full(full: dict[str, str], *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Record the types whose organs are all at ``max_agents`` with every agent busy (type ->
    a sentence saying so), as ``rundispatcher`` finds them every round; the rest are cleared.
    Only what a waiting task says: the claim does not read it. Returns whether anything
    changed."""
    with transaction.atomic(using=using):
        cleared, noted = _note_types("organ_full", full, using=using)
    return bool(cleared or noted)


# The queue_controls columns rundispatcher writes every round, one sentence per type.
_NOTE_COLUMNS = ("waiting_for", "organ_full")
# A control row that pauses, caps and says nothing: dropped, so the table every claim reads
# stays as small as what is actually set.
_IDLE_CONTROL = "NOT paused AND concurrency_limit IS NULL AND declared_concurrency IS NULL " + (
    " ".join(f"AND {name} IS NULL" for name in _NOTE_COLUMNS)
)


def _note_types(column: str, notes: dict[str, str], *, using: str) -> tuple[list, list]:
    """Set ``column`` to each type's note and clear it for every other type, writing only
    what changed; a row left with nothing to say is dropped. Returns (cleared, noted) rows."""
    assert column in _NOTE_COLUMNS
    types = sorted(notes)
    cleared = fetch(
        f"UPDATE queue_controls SET {column} = NULL "
        f"WHERE {column} IS NOT NULL AND NOT (type = ANY(%s::text[])) RETURNING type",
        [types],
        using=using,
    )
    noted = fetch(
        f"INSERT INTO queue_controls (type, {column}) "
        "SELECT * FROM unnest(%s::text[], %s::text[]) "
        f"ON CONFLICT (type) DO UPDATE SET {column} = excluded.{column} "
        f"WHERE queue_controls.{column} IS DISTINCT FROM excluded.{column} "
        "RETURNING type",
        [types, [notes[t] for t in types]],
        using=using,
    )
    if cleared:
        execute(
            f"DELETE FROM queue_controls WHERE type = ANY(%s::text[]) AND {_IDLE_CONTROL}",
            [[row["type"] for row in cleared]],
            using=using,
        )
    return cleared, noted


def _control_key(type: str | None) -> str:
    return ALL_TYPES if type is None else validate_queue_type(type)


def _forget_idle_control(key: str, *, using: str) -> None:
    # A row that neither pauses nor caps changes nothing; dropping it keeps the table (which
    # every claim reads) as small as what the operators actually set.
    execute(f"DELETE FROM queue_controls WHERE type = %s AND {_IDLE_CONTROL}", [key], using=using)


# The payload dispatchers wake on (organism.waker.NotifyWaker) that names no task: the
# dashboard's relay reads it as "no task changed".
WAKE_PAYLOAD = "[]"


def parse_notify_payload(payload: str) -> list[tuple[str, str]] | None:
    """The (id, status) pairs of a ``NOTIFY_CHANNEL`` payload, ``[[id, status, type], …]`` as
    the tasks table's triggers send it; None for a payload in any other shape."""
    try:
        items = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(items, list) or not all(
        isinstance(item, list) and len(item) >= 2 for item in items
    ):
        return None
    return [(str(item[0]), str(item[1])) for item in items]


def _wake_dispatchers(*, using: str) -> None:
    # NOTIFY is delivered at commit, so no dispatcher wakes to a change it cannot see yet.
    execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, WAKE_PAYLOAD], using=using)


# ---------------------------------------------------------------------------------------------
# Retention


def prune(
    *,
    older_than: timedelta,
    statuses: Sequence[str] = FINISHED_STATUSES,
    batch_size: int = 1000,
    dry_run: bool = False,
    max_batches: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> int:
    """Delete tasks in ``statuses`` (finished ones only) last changed before now − ``older_than``,
    in batches of ``batch_size``, each its own short transaction, stopping after
    ``max_batches`` batches if given. Returns how many (would) go."""
    bad = set(statuses) - {s.value for s in FINISHED_STATUSES}
    if bad:
        raise ValueError(f"only finished tasks can be pruned, not {', '.join(sorted(bad))}")
    cutoff = datetime.now(UTC) - older_than
    # created_at <= updated_at, so the created_at bound lets the status index narrow the scan.
    prunable = "status = ANY(%s::text[]) AND created_at < %s AND updated_at < %s"
    params = [[str(status) for status in statuses], cutoff, cutoff]
    if dry_run:
        rows = fetch(f"SELECT count(*) AS n FROM tasks WHERE {prunable}", params, using=using)
        return rows[0]["n"]
    deleted = batches = 0
    while True:
        n = execute(
            f"DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE {prunable} "
            "LIMIT %s FOR UPDATE SKIP LOCKED)",
            [*params, batch_size],
            using=using,
        )
        deleted += n
        batches += 1
        if n < batch_size or (max_batches is not None and batches >= max_batches):
            return deleted


def prune_expired(policy: RetentionPolicy, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """One bounded round of the retention policy: each group of finished statuses loses at
    most ``max_batches`` short batches (see :func:`prune`), so the queue never waits on it."""
    return sum(
        prune(
            older_than=older_than,
            statuses=statuses,
            batch_size=policy.batch_size,
            max_batches=policy.max_batches,
            using=using,
        )
        for statuses, older_than in policy.expiries()
    )


__all__ = [
    "NOTIFY_CHANNEL",
    "parse_notify_payload",
    "STALE",
    "OPERATOR_ACTIONS",
    "RUN_FIELDS",
    "Submitted",
    "WAKE_PAYLOAD",
    "TransitionNotAllowed",
    "UniqueKeyHeld",
    "UniqueKeyTaken",
    "apply_to_batch",
    "cancel",
    "claim",
    "claim_statement",
    "complete",
    "complete_many",
    "complete_many_statement",
    "declare_concurrency",
    "enqueue",
    "enqueue_many",
    "fail",
    "pause",
    "prune",
    "prune_expired",
    "reap",
    "release",
    "renew_leases",
    "resume",
    "run_now",
    "set_concurrency_limit",
    "submit",
]
