"""Operator actions over many tasks, each task going through the queue engine's own rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tasks import queue, selectors
from tasks.ids import TaskIdError
from tasks.models import Status

RETRY_ALL_LIMIT = 10_000


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # task id -> why


def run_now_many(task_ids: Iterable[str]) -> Outcome:
    return _each(queue.run_now, task_ids)


def cancel_many(task_ids: Iterable[str]) -> Outcome:
    return _each(queue.cancel, task_ids)


def _each(action: Callable[[str], object], task_ids: Iterable[str]) -> Outcome:
    """Apply ``action`` to each task; the engine refuses what the task's status forbids."""
    outcome = Outcome()
    for task_id in task_ids:
        try:
            action(task_id)
        except (queue.TransitionNotAllowed, TaskIdError, ValueError) as exc:
            outcome.refused[task_id] = str(exc)
        else:
            outcome.done.append(task_id)
    return outcome


def retry_failed_matching(
    task_filter: selectors.TaskFilter, *, limit: int = RETRY_ALL_LIMIT
) -> tuple[int, bool]:
    """Run now every FAILED task matching the filter (status forced to FAILED), page by page.

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
        queued += len(queue.run_now_matching(row["id"] for row in page.items))
        cursor = page.next_cursor
        if cursor is None:
            return queued, False
        if queued >= limit:
            return queued, True
