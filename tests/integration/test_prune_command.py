"""Retention: `manage.py prunetasks` and the supervisor's bounded pruning rounds."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from organism.supervisor import Supervisor, SupervisorOptions
from tasks import queue
from tasks.models import Task
from tasks.policy import RetentionPolicy

pytestmark = pytest.mark.django_db(transaction=True)


def _finished(n: int, outcome: str) -> list[str]:
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(n)])
    for task in queue.claim(dispatcher="d1", batch=n):
        if outcome == "COMPLETED":
            queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
        elif outcome == "FAILED":
            queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", permanent=True)
        else:
            queue.cancel(task["id"])
            queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
    return ids


def _age(ids: list[str], days: float) -> None:
    # The trigger stamps updated_at on every update, so it is paused while back-dating.
    old = datetime.now(UTC) - timedelta(days=days)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_stamp_updated_at")
        Task.objects.filter(id__in=ids).update(created_at=old, updated_at=old)
        cursor.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_stamp_updated_at")


def prunetasks(*args: str) -> str:
    out = io.StringIO()
    call_command("prunetasks", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def aged() -> dict[str, list[str]]:
    tasks = {s: _finished(3, s) for s in ("COMPLETED", "FAILED", "CANCELLED")}
    for ids in tasks.values():
        _age(ids, 10)
    tasks["fresh"] = _finished(2, "COMPLETED")
    tasks["queued"] = queue.enqueue_many([{"type": "echo"}])
    _age(tasks["queued"], 10)
    return tasks


def test_dry_run_counts_and_deletes_nothing(aged):
    assert prunetasks("--older-than", "5", "--dry-run") == (
        "would delete 9 task(s) (CANCELLED, COMPLETED, FAILED) unchanged for 5 day(s)\n"
    )
    assert Task.objects.count() == 12


def test_it_deletes_only_old_finished_tasks_of_the_chosen_statuses(aged):
    out = prunetasks("--older-than", "5", "--status", "completed", "--status", "FAILED")
    assert out.startswith("deleted 6 task(s) (COMPLETED, FAILED)")
    left = set(Task.objects.values_list("status", flat=True))
    assert left == {"CANCELLED", "COMPLETED", "QUEUED"}  # fresh COMPLETED stay
    assert Task.objects.filter(status="COMPLETED").count() == 2
    assert prunetasks("--older-than", "0.5", "--batch-size", "1").startswith("deleted 3 task(s)")
    assert Task.objects.count() == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "-1"], "at least 0"),
        (["--older-than", "nan"], "at least 0"),
        (["--older-than", "1", "--status", "RUNNING"], "finished statuses only"),
        (["--older-than", "1", "--status", "bogus"], "cannot prune BOGUS"),
        (["--older-than", "1", "--batch-size", "0"], "--batch-size"),
        (["--older-than", "soon"], "invalid float value"),
        ([], "--older-than"),
    ],
)
def test_bad_input_is_a_command_error(args, message):
    with pytest.raises(CommandError, match=message):
        prunetasks(*args)


def test_the_supervisor_prunes_in_bounded_rounds_and_keeps_failed_longer(aged):
    policy = RetentionPolicy(
        finished_days=5, failed_days=20, interval_seconds=3600, batch_size=2, max_batches=2
    )
    supervisor = Supervisor(SupervisorOptions(retention=policy), out=lambda _: None)
    # At most 2 batches of 2: 4 of the 6 old COMPLETED/CANCELLED go, FAILED (10 days) stays.
    assert supervisor.prune_if_due() == 4
    assert supervisor.prune_if_due() == 0  # not due again within the interval
    supervisor._next_prune = 0.0
    assert supervisor.prune_if_due() == 2
    assert Task.objects.filter(status="FAILED").count() == 3
    assert Task.objects.count() == 6  # 3 FAILED, 2 fresh COMPLETED, 1 QUEUED
