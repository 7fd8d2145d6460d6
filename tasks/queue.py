"""The queue engine: the one home of every statement that changes a task's status.

The API, the admin, the CLI, the dispatchers and the reaper all come through here, on
PostgreSQL and SQLite alike. Rules the engine keeps:

- A claim is one short statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a single
  ``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING`` under SQLite's write lock); no row
  lock is held while a task runs.
- Every write of an attempt's outcome is fenced by (task id, RUNNING, dispatcher, attempt):
  a stale write changes nothing and returns ``STALE``.
- A cancel of a RUNNING task sets ``cancel_requested``; that attempt then ends CANCELLED
  whatever it returns.
- Status changes are announced by database triggers (NOTIFY on PostgreSQL, migration 0002);
  SQLite readers use :func:`changes_since`.
- The hot path (claim, complete_many) runs prepared statements on PostgreSQL unless the
  database OPTIONS set ``prepare_threshold``; :func:`claim_statement` and
  :func:`complete_many_statement` give their text to ``manage.py benchqueue``'s bare loop.

Functions take ``using`` (a database alias) and return plain dicts and strings, so callers
in other processes (Ray actors) never see model instances.

This module is the entry point (``from tasks import queue``) and keeps every status change;
its siblings, re-exported here, hold the rest:

- ``tasks.sql``: the PostgreSQL/SQLite plumbing (cursors, parameter forms, row conversion);
- ``tasks.queue_reads``: counts per status, short-ID resolution, the change feed;
- ``tasks.heartbeats``: dispatcher heartbeats and the metric totals that outlive them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction

# Re-exported (see __all__), so callers keep one entry point: queue.beat, queue.resolve_id, …
from tasks.heartbeats import (
    DISPATCHER_TOTALS,
    SUPERVISOR_TOTALS,
    add_to_totals,
    beat,
    forget_dead_dispatchers,
    forget_dispatcher,
    merge_stats,
    metric_sources,
)
from tasks.ids import AmbiguousTaskId, TaskNotFound
from tasks.models import FINISHED_STATUSES, Status
from tasks.policy import RetryPolicy
from tasks.queue_reads import COUNT_CAP, StatusCount, changes_since, count_by_status, resolve_id
from tasks.sql import SQLITE_NOW, Dialect

STALE = "STALE"
NOTIFY_CHANNEL = "seedcore_tasks"

_COLUMNS = (
    "id, status, type, params, attempts, max_attempts, priority, drift_score, domain, "
    "description, locked_by, locked_at, lease_expires_at, run_after, created_at"
)


class TransitionNotAllowed(Exception):
    """The task's current status forbids the change; ``status`` says which it is."""

    def __init__(self, task_id: str, status: str, action: str):
        self.task_id = task_id
        self.status = status
        super().__init__(f"cannot {action} task {task_id}: it is {status}")


# ---------------------------------------------------------------------------------------------
# Enqueue


def enqueue(
    *,
    type: str,
    params: dict[str, Any] | None = None,
    description: str | None = None,
    domain: str | None = None,
    drift_score: float = 0.0,
    priority: int = 0,
    run_after: datetime | None = None,
    max_attempts: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> dict[str, Any]:
    """Insert one QUEUED task and return it as a dict."""
    task_id = enqueue_many(
        [
            {
                "type": type,
                "params": params,
                "description": description,
                "domain": domain,
                "drift_score": drift_score,
                "priority": priority,
                "run_after": run_after,
                "max_attempts": max_attempts,
            }
        ],
        using=using,
    )[0]
    return get(task_id, using=using)


def enqueue_many(specs: Iterable[dict[str, Any]], *, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Insert many QUEUED tasks in one statement (one round trip); returns their ids in order.

    Each spec holds ``type`` and optionally ``params``, ``description``, ``domain``,
    ``drift_score``, ``priority``, ``run_after`` and ``max_attempts``. The rows travel as
    arrays (PostgreSQL ``unnest``) or one JSON document (SQLite ``json_each``), so the
    statement's text and parameter count do not grow with the batch.
    """
    rows = [_enqueue_row(spec) for spec in specs]
    if not rows:
        return []
    d = Dialect(using)
    if d.postgres:
        columns = list(zip(*rows, strict=True))
        d.execute(
            f"INSERT INTO tasks ({_ENQUEUE_COLUMNS}) SELECT * FROM unnest(%s::uuid[], "
            "%s::text[], %s::jsonb[], %s::text[], %s::text[], %s::float8[], %s::int[], "
            "%s::timestamptz[], %s::int[])",
            [
                list(columns[0]),
                list(columns[1]),
                [d.json(value) for value in columns[2]],
                *(list(column) for column in columns[3:]),
            ],
        )
    else:
        names = _ENQUEUE_COLUMNS.split(", ")
        document = []
        for row in rows:
            item = dict(zip(names, row, strict=True))
            item["id"] = row[0].hex
            if item["run_after"] is not None:
                item["run_after"] = d.timestamp(item["run_after"])
            document.append(item)
        picked = ", ".join(f"value ->> '{name}'" for name in _ENQUEUE_COLUMNS.split(", "))
        picked = picked.replace("value ->> 'params'", "json(value -> 'params')")
        d.execute(
            f"INSERT INTO tasks ({_ENQUEUE_COLUMNS}) SELECT {picked} FROM json_each(%s)",
            [json.dumps(document)],
        )
    return [str(row[0]) for row in rows]


_ENQUEUE_COLUMNS = (
    "id, type, params, description, domain, drift_score, priority, run_after, max_attempts"
)


def _enqueue_row(spec: dict[str, Any]) -> tuple:
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
    )


# ---------------------------------------------------------------------------------------------
# Claim, renew, release


def claim(
    *,
    dispatcher: str,
    batch: int,
    lease_seconds: float | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> list[dict[str, Any]]:
    """Claim up to ``batch`` claimable tasks for ``dispatcher``: RUNNING, attempts + 1.

    Claimable: QUEUED or RETRY with ``run_after`` null or past; highest priority, then oldest
    first. Returns the claimed rows as plain dicts; ``attempts`` is the fencing token that
    every later write for this attempt must present.
    """
    d = Dialect(using)
    lease = lease_seconds if lease_seconds is not None else settings.SEEDCORE_LEASE_SECONDS
    if d.postgres:
        params = [batch, dispatcher, d.seconds(lease)]
    else:
        params = [dispatcher, d.seconds(lease), batch]
    return d.fetch(claim_statement(d.connection.vendor), params, prepare=d.prepare_hot)


def claim_statement(vendor: str = "postgresql") -> str:
    """The claim statement :func:`claim` runs (``%s`` placeholders), for the benchmark's bare
    loop. PostgreSQL parameters: batch, dispatcher, lease seconds; SQLite: dispatcher,
    lease as ``'+N seconds'``, batch."""
    return _CLAIM_SQL[vendor]


def _claim_sql(postgres: bool) -> str:
    now = "now()" if postgres else SQLITE_NOW
    claimable = (
        f"status IN ('QUEUED', 'RETRY') AND (run_after IS NULL OR run_after <= {now}) "
        "ORDER BY priority DESC, created_at LIMIT %s"
    )
    if postgres:
        return (
            f"WITH picked AS (SELECT id FROM tasks WHERE {claimable} FOR UPDATE SKIP LOCKED) "
            "UPDATE tasks AS t SET status = 'RUNNING', locked_by = %s, locked_at = now(), "
            "lease_expires_at = (now() + %s * interval '1 second'), attempts = t.attempts + 1, "
            "cancel_requested = false "
            f"FROM picked WHERE t.id = picked.id RETURNING {_prefixed('t', _COLUMNS)}"
        )
    return (
        f"UPDATE tasks SET status = 'RUNNING', locked_by = %s, locked_at = {now}, "
        f"lease_expires_at = strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', %s), "
        f"attempts = attempts + 1, cancel_requested = 0, updated_at = {now} "
        f"WHERE id IN (SELECT id FROM tasks WHERE {claimable}) RETURNING {_COLUMNS}"
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
    d = Dialect(using)
    lease = lease_seconds if lease_seconds is not None else settings.SEEDCORE_LEASE_SECONDS
    pair = "(%s::uuid, %s::int)" if d.postgres else "(%s, %s)"
    held_values = ", ".join([pair] * len(attempts))
    held_params = [value for item in attempts.items() for value in (d.id(item[0]), item[1])]
    if d.postgres:
        # Rows are locked in id order (as complete_many does) so the two never deadlock.
        sql = (
            f"WITH held(id, attempt) AS (VALUES {held_values}), locked AS ("
            "SELECT t.id FROM tasks AS t JOIN held ON t.id = held.id AND t.attempts = held.attempt "
            "WHERE t.status = 'RUNNING' AND t.locked_by = %s ORDER BY t.id FOR UPDATE OF t) "
            f"UPDATE tasks AS t SET lease_expires_at = {d.now_plus()} FROM locked "
            "WHERE t.id = locked.id RETURNING t.id, t.cancel_requested"
        )
        params = [*held_params, dispatcher, d.seconds(lease)]
    else:
        sql = (
            f"UPDATE tasks SET lease_expires_at = {d.now_plus()} "
            f"WHERE status = 'RUNNING' AND locked_by = %s AND (id, attempts) IN "
            f"(VALUES {held_values}) RETURNING id, cancel_requested"
        )
        params = [d.seconds(lease), dispatcher, *held_params]
    held = {}
    for row in d.fetch(sql, params):
        held[row["id"]] = bool(row["cancel_requested"])
    return held


def release(
    *, dispatcher: str, attempts: dict[str, int], using: str = DEFAULT_DB_ALIAS
) -> list[str]:
    """Give attempts that never ran (or were stopped by a shutdown) back to the queue.

    The task goes back to QUEUED (CANCELLED if a cancel was requested) and the attempt is
    not counted. Returns the ids released.
    """
    if not attempts:
        return []
    d = Dialect(using)
    released = []
    with transaction.atomic(using=using):
        for task_id, attempt in sorted(attempts.items()):
            rows = d.fetch(
                "UPDATE tasks SET "
                "status = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'QUEUED' END, "
                "attempts = attempts - 1, locked_by = NULL, locked_at = NULL, "
                f"lease_expires_at = NULL{_touch(d)} "
                "WHERE id = %s AND status = 'RUNNING' AND locked_by = %s AND attempts = %s "
                "RETURNING id",
                [d.id(task_id), dispatcher, attempt],
            )
            released += [row["id"] for row in rows]
    return released


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
    results: Sequence[tuple[str, int, Any]],
    using: str = DEFAULT_DB_ALIAS,
) -> dict[str, str]:
    """Record many successful attempts in one statement.

    ``results`` holds (task id, attempt, result). Returns task id → COMPLETED or CANCELLED
    for each write that took effect; ids missing from the answer were stale.
    """
    if not results:
        return {}
    d = Dialect(using)
    if d.postgres:
        params = [
            [d.id(r[0]) for r in results],
            [r[1] for r in results],
            [d.json(r[2]) for r in results],
            dispatcher,
        ]
        rows = d.fetch(complete_many_statement(), params, prepare=d.prepare_hot)
    else:
        rows = []
        with transaction.atomic(using=using):
            for task_id, attempt, result in results:
                rows += d.fetch(
                    f"UPDATE tasks AS t SET {_COMPLETE_SET}, result = %s{_touch(d)} "
                    "WHERE id = %s AND attempts = %s AND status = 'RUNNING' AND locked_by = %s "
                    "RETURNING id, status",
                    [d.json(result), d.id(task_id), attempt, dispatcher],
                )
    return {row["id"]: row["status"] for row in rows}


_COMPLETE_SET = (
    "status = CASE WHEN t.cancel_requested THEN 'CANCELLED' ELSE 'COMPLETED' END, "
    "lease_expires_at = NULL, error = NULL"
)


def complete_many_statement() -> str:
    """PostgreSQL's fenced batch completion (``%s`` placeholders), for the benchmark's bare
    loop. Parameters: ids (uuid[]), attempts (int[]), results (jsonb[]), dispatcher."""
    # The CTE locks the rows in id order, as renew_leases does, so concurrent writers of one
    # dispatcher's rows can never deadlock.
    return (
        "WITH done AS (SELECT * FROM unnest(%s::uuid[], %s::int[], %s::jsonb[]) "
        "AS done(id, attempt, result)), locked AS (SELECT t.id, done.result FROM tasks AS t "
        "JOIN done ON t.id = done.id AND t.attempts = done.attempt "
        "WHERE t.status = 'RUNNING' AND t.locked_by = %s ORDER BY t.id FOR UPDATE OF t) "
        f"UPDATE tasks AS t SET {_COMPLETE_SET}, result = locked.result FROM locked "
        "WHERE t.id = locked.id RETURNING t.id, t.status"
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
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """Record a failed attempt: RETRY with backoff, or FAILED at the last attempt or on a
    permanent error; CANCELLED if a cancel was requested; STALE if no longer owned.

    ``max_attempts`` is the handler's cap; the task's own ``max_attempts`` column wins over it,
    and the policy's (SEEDCORE_MAX_ATTEMPTS) applies when neither is set.
    """
    d = Dialect(using)
    policy = policy or RetryPolicy.from_settings()
    if max_attempts is not None:
        policy = RetryPolicy(max_attempts, policy.backoff_seconds, policy.backoff_max_steps)
    with transaction.atomic(using=using):
        rows = d.fetch(
            "SELECT max_attempts, cancel_requested FROM tasks WHERE id = %s AND attempts = %s "
            "AND status = 'RUNNING' AND locked_by = %s" + (" FOR UPDATE" if d.postgres else ""),
            [d.id(task_id), attempt, dispatcher],
        )
        if not rows:
            return STALE
        status, delay = policy.after_failure(
            attempts=attempt, task_max_attempts=rows[0]["max_attempts"], permanent=permanent
        )
        if rows[0]["cancel_requested"]:
            status, delay = Status.CANCELLED.value, None
        entry = {
            "attempt": attempt,
            "error": error,
            "traceback": traceback,
            "dispatcher": dispatcher,
            "at": datetime.now(UTC).isoformat(),
            "outcome": status,
        }
        run_after = d.now_plus() if delay is not None else "run_after"
        params: list[Any] = [status, error]
        if delay is not None:
            params.append(d.seconds(delay))
        params += [d.json(entry), d.id(task_id)]
        d.execute(
            f"UPDATE tasks SET status = %s, error = %s, run_after = {run_after}, "
            f"lease_expires_at = NULL, error_history = {_append_json(d)}{_touch(d)} "
            "WHERE id = %s",
            params,
        )
    return status


# ---------------------------------------------------------------------------------------------
# Reaper


def reap(
    *,
    heartbeat_timeout: float,
    policy: RetryPolicy | None = None,
    limit: int = 500,
    using: str = DEFAULT_DB_ALIAS,
) -> list[dict[str, Any]]:
    """Send RUNNING tasks whose lease ran out, or whose dispatcher's heartbeat is older than
    ``heartbeat_timeout`` seconds (or missing), back to RETRY (FAILED at the last attempt;
    CANCELLED if a cancel was requested). Returns ``{"id", "status", "reason"}`` per task."""
    d = Dialect(using)
    policy = policy or RetryPolicy.from_settings()
    # The "- seconds" bound is computed by the dialect as now + (-timeout).
    sql = (
        "SELECT t.id, t.attempts, t.max_attempts, t.locked_by, t.cancel_requested, "
        f"CASE WHEN t.lease_expires_at IS NULL OR t.lease_expires_at < {d.now} "
        "THEN 'lease' ELSE 'heartbeat' END AS reason FROM tasks AS t "
        "LEFT JOIN dispatchers AS w ON w.name = t.locked_by "
        f"WHERE t.status = 'RUNNING' AND (t.lease_expires_at IS NULL OR t.lease_expires_at < "
        f"{d.now} OR w.name IS NULL OR w.last_beat_at < {d.now_plus()}) LIMIT %s"
    )
    reaped = []
    with transaction.atomic(using=using):
        rows = d.fetch(
            sql + (" FOR UPDATE OF t SKIP LOCKED" if d.postgres else ""),
            [d.seconds(-heartbeat_timeout), limit],
        )
        for row in rows:
            if row["reason"] == "lease":
                error = f"reaped: lease of attempt {row['attempts']} ran out on {row['locked_by']}"
            else:
                error = f"reaped: dispatcher {row['locked_by']} stopped sending heartbeats"
            status, delay = policy.after_failure(
                attempts=row["attempts"], task_max_attempts=row["max_attempts"]
            )
            if row["cancel_requested"]:
                status, delay = Status.CANCELLED.value, None
            entry = {
                "attempt": row["attempts"],
                "error": error,
                "traceback": "",
                "dispatcher": row["locked_by"],
                "at": datetime.now(UTC).isoformat(),
                "outcome": status,
            }
            params: list[Any] = [status, error]
            if delay is not None:
                params.append(d.seconds(delay))
            params += [d.json(entry), d.id(row["id"]), row["attempts"]]
            run_after = d.now_plus() if delay is not None else "run_after"
            d.execute(
                f"UPDATE tasks SET status = %s, error = %s, run_after = {run_after}, "
                "lease_expires_at = NULL, locked_by = NULL, "
                f"error_history = {_append_json(d)}{_touch(d)} "
                "WHERE id = %s AND attempts = %s AND status = 'RUNNING'",
                params,
            )
            reaped.append({"id": row["id"], "status": status, "reason": error})
    return reaped


# ---------------------------------------------------------------------------------------------
# Operator actions


def cancel(task_id: str, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Cancel a task. QUEUED or RETRY become CANCELLED at once; a RUNNING task gets
    ``cancel_requested`` and ends CANCELLED when its attempt stops; CANCELLED stays so.
    COMPLETED and FAILED raise :class:`TransitionNotAllowed`."""
    d = Dialect(using)
    with transaction.atomic(using=using):
        rows = d.fetch(
            "UPDATE tasks SET "
            "status = CASE WHEN status = 'RUNNING' THEN status ELSE 'CANCELLED' END, "
            "cancel_requested = CASE WHEN status = 'RUNNING' THEN %s ELSE cancel_requested END"
            f"{_touch(d)} WHERE id = %s AND status IN ('QUEUED', 'RETRY', 'RUNNING') "
            "RETURNING id",
            [True, d.id(task_id)],
        )
        if not rows:
            current = _current_status(d, task_id)
            if current != Status.CANCELLED:
                raise TransitionNotAllowed(str(task_id), current, "cancel")
    return get(task_id, using=using)


RUNNABLE_NOW = (Status.FAILED, Status.CANCELLED, Status.RETRY, Status.QUEUED)


def run_now(task_id: str, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Queue a FAILED, CANCELLED, RETRY or QUEUED task to run at once, with a fresh set of
    attempts: ``attempts`` goes back to 0 (the next claim is attempt 1), ``error`` and
    ``result`` are cleared, and ``error_history`` keeps every earlier attempt.
    RUNNING and COMPLETED raise :class:`TransitionNotAllowed`."""
    d = Dialect(using)
    allowed, params = d.in_list([s.value for s in RUNNABLE_NOW])
    with transaction.atomic(using=using):
        rows = d.fetch(
            f"UPDATE tasks SET status = 'QUEUED', run_after = {d.now}, attempts = 0, "
            "cancel_requested = %s, locked_by = NULL, locked_at = NULL, "
            f"lease_expires_at = NULL, error = NULL, result = NULL{_touch(d)} "
            f"WHERE id = %s AND status IN {allowed} RETURNING id",
            [False, d.id(task_id), *params],
        )
        if not rows:
            raise TransitionNotAllowed(str(task_id), _current_status(d, task_id), "run")
    return get(task_id, using=using)


def run_now_matching(task_ids: Iterable[str], *, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Run now every task of ``task_ids`` whose status allows it; returns those queued."""
    queued = []
    for task_id in task_ids:
        try:
            run_now(task_id, using=using)
        except TransitionNotAllowed:
            continue
        queued.append(str(task_id))
    return queued


# ---------------------------------------------------------------------------------------------
# One task, as every write above returns it (counts, short IDs and the change feed are in
# tasks.queue_reads)


def get(task_id: str | uuid.UUID, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    d = Dialect(using)
    rows = d.fetch(
        f"SELECT {_COLUMNS}, result, error, error_history, cancel_requested, updated_at "
        "FROM tasks WHERE id = %s",
        [d.id(task_id)],
    )
    if not rows:
        raise TaskNotFound(f"no task with ID {task_id}")
    return rows[0]


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
    d = Dialect(using)
    cutoff = datetime.now(UTC) - older_than
    status_sql, status_params = d.in_list(list(statuses))
    # created_at <= updated_at, so the created_at bound lets the status index narrow the scan.
    where = f"status IN {status_sql} AND created_at < %s AND updated_at < %s"
    params = [*status_params, d.timestamp(cutoff), d.timestamp(cutoff)]
    if dry_run:
        return d.fetch(f"SELECT count(*) AS n FROM tasks WHERE {where}", params)[0]["n"]
    lock = " FOR UPDATE SKIP LOCKED" if d.postgres else ""
    deleted = batches = 0
    while True:
        n = d.execute(
            f"DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE {where} LIMIT %s{lock})",
            [*params, batch_size],
        )
        deleted += n
        batches += 1
        if n < batch_size or (max_batches is not None and batches >= max_batches):
            return deleted


# ---------------------------------------------------------------------------------------------
# Statement fragments shared by the writes above


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def _touch(d: Dialect) -> str:
    # PostgreSQL's trigger stamps updated_at; on SQLite, stamping it here spares the trigger's
    # second write.
    return "" if d.postgres else f", updated_at = {d.now}"


def _append_json(d: Dialect) -> str:
    if d.postgres:
        return "error_history || jsonb_build_array(%s::jsonb)"
    return "json_insert(error_history, '$[#]', json(%s))"


def _current_status(d: Dialect, task_id: str) -> str:
    rows = d.fetch("SELECT status FROM tasks WHERE id = %s", [d.id(task_id)])
    if not rows:
        raise TaskNotFound(f"no task with ID {task_id}")
    return rows[0]["status"]


_CLAIM_SQL = {"postgresql": _claim_sql(True), "sqlite": _claim_sql(False)}


__all__ = [
    "COUNT_CAP",
    "DISPATCHER_TOTALS",
    "NOTIFY_CHANNEL",
    "RUNNABLE_NOW",
    "STALE",
    "SUPERVISOR_TOTALS",
    "AmbiguousTaskId",
    "RetryPolicy",
    "StatusCount",
    "TaskNotFound",
    "TransitionNotAllowed",
    "add_to_totals",
    "beat",
    "cancel",
    "changes_since",
    "claim",
    "claim_statement",
    "complete",
    "complete_many",
    "complete_many_statement",
    "count_by_status",
    "enqueue",
    "enqueue_many",
    "fail",
    "forget_dead_dispatchers",
    "forget_dispatcher",
    "get",
    "merge_stats",
    "metric_sources",
    "prune",
    "reap",
    "release",
    "renew_leases",
    "resolve_id",
    "run_now",
    "run_now_matching",
]
