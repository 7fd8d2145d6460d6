"""The reads the queue engine owns besides ``queue.get``: cheap counts and short IDs.

- Counts per status are exact up to a cap and estimated from PostgreSQL's planner statistics
  above it, so a dashboard never counts millions of rows.
- A short ID (a hex prefix) becomes an ID range, so resolving it walks the primary key index.

Nothing here changes a task; ``tasks.queue`` re-exports these names, so callers use
``queue.count_by_status(…)`` like every other queue call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from tasks.ids import MAX_CANDIDATES, AmbiguousTaskId, TaskNotFound, parse_id_prefix
from tasks.models import Status, Task
from tasks.sql import fetch

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
