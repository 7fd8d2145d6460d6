"""Counts per status and pruning finished tasks."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from tasks import queue, selectors
from tasks.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def _finish(n: int, outcome: str) -> list[str]:
    ids = queue.enqueue_many([{"type": outcome.lower()} for _ in range(n)])
    claimed = queue.claim(dispatcher="d1", batch=n)
    for task in claimed:
        if outcome == "COMPLETED":
            queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
        elif outcome == "FAILED":
            queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", permanent=True)
        else:
            queue.cancel(task["id"])
            queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
    return ids


def _age(ids: list[str], days: float) -> None:
    """Back-date tasks. The trigger stamps updated_at on every update, so it is paused
    meanwhile."""
    old = datetime.now(UTC) - timedelta(days=days)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_stamp_updated_at")
        Task.objects.filter(id__in=ids).update(created_at=old, updated_at=old)
        cursor.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_stamp_updated_at")


def test_count_by_status_is_exact_below_the_cap():
    queue.enqueue_many([{"type": "echo"} for _ in range(4)])
    _finish(2, "COMPLETED")
    counts = selectors.count_by_status()
    assert {status: c.count for status, c in counts.items()} == {
        "QUEUED": 4,
        "RUNNING": 0,
        "COMPLETED": 2,
        "FAILED": 0,
        "RETRY": 0,
        "CANCELLED": 0,
    }
    assert all(c.exact for c in counts.values())


def test_count_by_status_above_the_cap_is_marked_inexact():
    queue.enqueue_many([{"type": "echo"} for _ in range(12)])
    counts = selectors.count_by_status(cap=5)
    assert counts["QUEUED"].exact is False
    assert counts["QUEUED"].count >= 5
    assert counts["FAILED"] == selectors.StatusCount(0, True)


def test_prune_deletes_only_finished_tasks_older_than_the_cutoff_in_batches():
    old_done = _finish(5, "COMPLETED") + _finish(2, "FAILED") + _finish(2, "CANCELLED")
    _age(old_done, days=10)
    recent_done = _finish(2, "COMPLETED")
    old_queued = queue.enqueue_many([{"type": "echo"} for _ in range(2)])
    _age(old_queued, days=10)

    assert queue.prune(older_than=timedelta(days=7), dry_run=True) == 9
    assert Task.objects.count() == 13

    assert queue.prune(older_than=timedelta(days=7), batch_size=2) == 9
    left = {str(task_id) for task_id in Task.objects.values_list("id", flat=True)}
    assert left == set(recent_done + old_queued)


def test_prune_can_be_limited_to_some_finished_statuses():
    completed = _finish(2, "COMPLETED")
    failed = _finish(2, "FAILED")
    _age(completed + failed, days=10)
    assert queue.prune(older_than=timedelta(days=7), statuses=["COMPLETED"]) == 2
    assert {str(i) for i in Task.objects.values_list("id", flat=True)} == set(failed)


@pytest.mark.parametrize("status", ["QUEUED", "RUNNING", "RETRY"])
def test_prune_refuses_unfinished_statuses(status):
    with pytest.raises(ValueError, match=status):
        queue.prune(older_than=timedelta(days=1), statuses=["COMPLETED", status])
