"""Dispatcher heartbeats and the metric totals that outlive them.

Each dispatcher upserts one row of ``dispatchers`` per beat (the reaper's test of a live
dispatcher, and the dashboard's list). When a row goes (a clean stop, or a dispatcher silent
for too long), its cumulative stats are folded into ``metric_totals``, so the counters /metrics
sums never go backwards. These are the writes of those two tables; nothing here changes a task's
status (``tasks.queue``), and their reads (liveness, what /metrics sums) are ``tasks.selectors``.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from tasks.sql import Jsonb, execute, fetch

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
    execute(
        "INSERT INTO dispatchers (name, node, pid, started_at, last_beat_at, in_flight, "
        "processed, stats) VALUES (%s, %s, %s, now(), now(), %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET last_beat_at = now(), "
        "in_flight = excluded.in_flight, processed = excluded.processed, node = excluded.node, "
        "pid = excluded.pid, stats = excluded.stats",
        [name, node, pid, in_flight, processed, Jsonb(stats or {})],
        using=using,
    )


def forget_dispatcher(name: str, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Remove a dispatcher's heartbeat row (it stopped cleanly), keeping its counters."""
    with transaction.atomic(using=using):
        rows = fetch("DELETE FROM dispatchers WHERE name = %s RETURNING stats", [name], using=using)
        _fold_into_totals(DISPATCHER_TOTALS, [row["stats"] for row in rows], using=using)


def forget_dead_dispatchers(*, silent_for: float, using: str = DEFAULT_DB_ALIAS) -> int:
    """Remove heartbeat rows silent for ``silent_for`` seconds that hold no RUNNING task (the
    reaper frees those first), so killed dispatchers do not linger on the dashboard. Their
    counters are folded into the totals, so /metrics never goes backwards."""
    with transaction.atomic(using=using):
        rows = fetch(
            "DELETE FROM dispatchers WHERE last_beat_at < now() - %s * interval '1 second' "
            "AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.status = 'RUNNING' "
            "AND tasks.locked_by = dispatchers.name) RETURNING stats",
            [silent_for],
            using=using,
        )
        _fold_into_totals(DISPATCHER_TOTALS, [row["stats"] for row in rows], using=using)
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
    with transaction.atomic(using=using):
        _fold_into_totals(name, [stats], using=using)


def _fold_into_totals(name: str, stats: list[dict[str, Any]], *, using: str) -> None:
    # Called inside a transaction; the row lock serialises concurrent folds into one row.
    if not stats:
        return
    execute(
        "INSERT INTO metric_totals (name, stats) VALUES (%s, '{}') ON CONFLICT (name) DO NOTHING",
        [name],
        using=using,
    )
    rows = fetch("SELECT stats FROM metric_totals WHERE name = %s FOR UPDATE", [name], using=using)
    total = rows[0]["stats"] or {}
    for extra in stats:
        merge_stats(total, extra or {})
    execute(
        "UPDATE metric_totals SET stats = %s WHERE name = %s", [Jsonb(total), name], using=using
    )
