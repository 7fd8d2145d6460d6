"""Dispatcher heartbeats and the metric totals that outlive them.

Each dispatcher upserts one row of ``dispatchers`` per beat (the reaper's test of a live
dispatcher, and the dashboard's list). When a row goes (a clean stop, or a dispatcher silent
for too long), its cumulative stats are folded into ``metric_totals``, so the counters /metrics
sums never go backwards. Nothing here changes a task's status; ``tasks.queue`` re-exports these
functions, so callers use ``queue.beat(…)`` like every other queue call.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from tasks.sql import Dialect, json_value, sqlite_datetime

DISPATCHER_TOTALS = "dispatchers"
SUPERVISOR_TOTALS = "supervisor"


# ---------------------------------------------------------------------------------------------
# Heartbeats


def beat(
    *,
    name: str,
    node: str,
    pid: int,
    in_flight: int,
    processed: int,
    stats: dict[str, Any] | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> None:
    """Record a dispatcher's heartbeat (insert on its first beat) with its cumulative
    ``stats`` (see :func:`merge_stats`)."""
    d = Dialect(using)
    d.execute(
        "INSERT INTO dispatchers (name, node, pid, started_at, last_beat_at, in_flight, "
        f"processed, stats) VALUES (%s, %s, %s, {d.now}, {d.now}, %s, %s, %s) "
        f"ON CONFLICT (name) DO UPDATE SET last_beat_at = {d.now}, "
        "in_flight = excluded.in_flight, processed = excluded.processed, node = excluded.node, "
        "pid = excluded.pid, stats = excluded.stats",
        [name, node, pid, in_flight, processed, d.json(stats or {})],
    )


def forget_dispatcher(name: str, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Remove a dispatcher's heartbeat row (it stopped cleanly), keeping its counters."""
    d = Dialect(using)
    with transaction.atomic(using=using):
        rows = d.fetch("DELETE FROM dispatchers WHERE name = %s RETURNING stats", [name])
        _fold_into_totals(d, DISPATCHER_TOTALS, [json_value(r["stats"]) for r in rows])


def forget_dead_dispatchers(*, silent_for: float, using: str = DEFAULT_DB_ALIAS) -> int:
    """Remove heartbeat rows silent for ``silent_for`` seconds that hold no RUNNING task (the
    reaper frees those first), so killed dispatchers do not linger on the dashboard. Their
    counters are folded into the totals, so /metrics never goes backwards."""
    d = Dialect(using)
    with transaction.atomic(using=using):
        rows = d.fetch(
            f"DELETE FROM dispatchers WHERE last_beat_at < {d.now_plus()} AND NOT EXISTS "
            "(SELECT 1 FROM tasks WHERE tasks.status = 'RUNNING' "
            "AND tasks.locked_by = dispatchers.name) RETURNING stats",
            [d.seconds(-silent_for)],
        )
        _fold_into_totals(d, DISPATCHER_TOTALS, [json_value(r["stats"]) for r in rows])
    return len(rows)


# ---------------------------------------------------------------------------------------------
# Metric totals: counters that outlive the process (or heartbeat row) that counted them


def merge_stats(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Add ``extra``'s counters and histograms to ``into`` (in place; also returned).

    Stats are ``{"counters": {name: n}, "histograms": {metric: {label: {"buckets": [n, …],
    "sum": s, "count": n}}}}``; other keys (a circuit's state) are not additive and are left.
    """
    counters = into.setdefault("counters", {})
    for name, value in (extra.get("counters") or {}).items():
        counters[name] = counters.get(name, 0) + value
    histograms = into.setdefault("histograms", {})
    for metric, by_label in (extra.get("histograms") or {}).items():
        target = histograms.setdefault(metric, {})
        for label, hist in by_label.items():
            mine = target.get(label)
            if mine is None or len(mine["buckets"]) != len(hist["buckets"]):
                # First seen (or the bucket bounds changed): take it as it is.
                target[label] = {**hist, "buckets": list(hist["buckets"])}
                continue
            mine["buckets"] = [a + b for a, b in zip(mine["buckets"], hist["buckets"], strict=True)]
            mine["sum"] += hist["sum"]
            mine["count"] += hist["count"]
    return into


def add_to_totals(name: str, stats: dict[str, Any], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Add ``stats`` to the totals row ``name`` (e.g. the supervisor's reaped count)."""
    d = Dialect(using)
    with transaction.atomic(using=using):
        _fold_into_totals(d, name, [stats])


def _fold_into_totals(d: Dialect, name: str, stats: list[dict[str, Any]]) -> None:
    # Called inside a transaction; the row lock (PostgreSQL) or the write lock (SQLite,
    # taken by the INSERT) serialises concurrent folds.
    if not stats:
        return
    d.execute(
        "INSERT INTO metric_totals (name, stats) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        [name, d.json({})],
    )
    lock = " FOR UPDATE" if d.postgres else ""
    row = d.fetch(f"SELECT stats FROM metric_totals WHERE name = %s{lock}", [name])[0]
    total = json_value(row["stats"]) or {}
    for extra in stats:
        merge_stats(total, extra or {})
    d.execute("UPDATE metric_totals SET stats = %s WHERE name = %s", [d.json(total), name])


def metric_sources(*, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """What /metrics sums: every heartbeat row (name, last beat, stats) and every totals row."""
    d = Dialect(using)
    dispatchers = d.fetch(
        "SELECT name, last_beat_at, in_flight, stats FROM dispatchers ORDER BY name", []
    )
    for row in dispatchers:
        row["stats"] = json_value(row["stats"]) or {}
        if not d.postgres:
            row["last_beat_at"] = sqlite_datetime(row["last_beat_at"])
    totals = {
        row["name"]: json_value(row["stats"]) or {}
        for row in d.fetch("SELECT name, stats FROM metric_totals", [])
    }
    return {"dispatchers": dispatchers, "totals": totals}
