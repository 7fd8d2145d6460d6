"""Operator actions over many tasks, each task going through the queue engine's own rules."""

from __future__ import annotations

from django.db import transaction

from tasks import audit, queue, selectors
from tasks.models import Status

RETRY_ALL_LIMIT = 10_000


def retry_failed_matching(
    task_filter: selectors.TaskFilter, actor: audit.Actor, *, limit: int = RETRY_ALL_LIMIT
) -> tuple[int, bool]:
    """Run now every FAILED task matching the filter (status forced to FAILED), page by page,
    and record it (with the filter and the count) in the audit trail.

    Returns (how many were queued, whether ``limit`` stopped it before the end).
    """
    only_failed = selectors.TaskFilter(
        status=Status.FAILED,
        type=task_filter.type,
        domain=task_filter.domain,
        id_prefix=task_filter.id_prefix,
    )
    queued = 0
    cursor = None
    while True:
        page = selectors.list_tasks(only_failed, cursor=cursor, limit=min(500, limit - queued))
        with transaction.atomic():
            done = queue.run_now_matching(row["id"] for row in page.items)
            queued += len(done)
            if done:
                audit.record(
                    actor,
                    "tasks.retry_failed_matching",
                    target=f"{len(done)} task(s)",
                    detail={"filter": only_failed.describe(), "count": len(done)},
                )
        cursor = page.next_cursor
        if cursor is None:
            return queued, False
        if queued >= limit:
            return queued, True
