"""Django's ``@task`` functions run on a local Ray through SeedCore, end to end: enqueued with
``.enqueue()`` from a test app (tests/taskapp), claimed by real dispatcher actors, run by the
organism's agents, read back with ``get_result``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django_tasks import TaskResultStatus

from tasks import queue, selectors
from tasks.models import Task
from tests.conftest import ROOT, SUPERVISED_BACKOFF, supervisor_running
from tests.ray.test_rundispatcher import cluster_args, command_env
from tests.taskapp import NOT_A_TASK_MARKER as MARKER
from tests.taskapp import tasks as app

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]


def wait_finished(task, result_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := task.get_result(result_id)).is_finished:
        assert time.monotonic() < deadline, result
        time.sleep(0.1)
    return result


def test_rundispatcher_runs_sync_async_and_context_tasks_to_their_return_values(
    ray_cluster, test_database_url
):
    process = subprocess.Popen(
        [sys.executable, "manage.py", "rundispatcher", "--dispatchers", "1"]
        + cluster_args(ray_cluster),
        cwd=ROOT,
        env=command_env(test_database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in process.stdout:
            if line.startswith("supervising"):
                break
        added = app.add.enqueue(2, b=3)
        multiplied = app.multiply.enqueue(6, 7)
        context = app.whoami.enqueue(greeting="hi")

        result = wait_finished(app.add, added.id)
        assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
        assert result.return_value == 5
        assert result.attempts == 1 and result.errors == []
        [worker] = result.worker_ids
        assert worker.startswith("seedcore_dispatcher_0") and "/" in worker  # dispatcher/agent
        assert result.enqueued_at <= result.started_at <= result.finished_at

        assert wait_finished(app.multiply, multiplied.id).return_value == 42
        assert wait_finished(app.whoami, context.id).return_value == {
            "greeting": "hi",
            "attempt": 1,
            "result_id": context.id,
        }
        # The dashboard and the API see them like any other task, typed by their path.
        assert selectors.get_task(added.id)["type"] == "tests.taskapp.tasks.add"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_a_raising_task_ends_failed_with_each_attempt_s_traceback(supervised):
    result = wait_finished(app.boom, app.boom.enqueue("it broke").id)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 3  # the supervised dispatchers' cap
    assert len(result.errors) == 3
    for error in result.errors:
        assert error.exception_class is ValueError
        assert "Traceback" in error.traceback and "ValueError: it broke" in error.traceback
    assert all(worker.startswith("seedcore_dispatcher_") for worker in result.worker_ids)


def test_a_deferred_task_waits_for_its_run_after(supervised):
    run_after = datetime.now(UTC) + timedelta(seconds=2)
    result_id = app.add.using(run_after=run_after).enqueue(1, 1).id
    time.sleep(1)
    assert app.add.get_result(result_id).status == TaskResultStatus.READY
    result = wait_finished(app.add, result_id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at >= run_after


def test_an_enqueue_in_a_rolled_back_transaction_never_runs(supervised):
    with pytest.raises(RuntimeError), transaction.atomic():
        app.boom.enqueue("must never run")
        raise RuntimeError("roll back")
    after = app.add.enqueue(1, 2)  # enqueued after: once it ran, the other had its chance
    assert wait_finished(app.add, after.id).return_value == 3
    time.sleep(SUPERVISED_BACKOFF * 2)
    assert list(Task.objects.values_list("type", flat=True)) == ["tests.taskapp.tasks.add"]


def test_a_row_naming_a_function_without_task_fails_and_is_never_imported(supervised):
    MARKER.unlink(missing_ok=True)
    for path in ("tests.taskapp.not_a_task.plain_function", "tests.taskapp.tasks.not_a_task"):
        task_id = queue.enqueue(type=path)["id"]
        deadline = time.monotonic() + 30
        while (row := selectors.get_task(task_id))["status"] != "FAILED":
            assert time.monotonic() < deadline, row
            time.sleep(0.1)
        assert row["attempts"] == 1  # permanent: not retried
        assert row["error"] == f"no handler registered for type '{path}'"
    assert not MARKER.exists(), "a Ray worker imported the module a task row named"


def test_a_higher_priority_runs_first(ray_cluster, transactional_db, settings):
    settings.SEEDCORE_BACKOFF_SECONDS = SUPERVISED_BACKOFF
    # Enqueued before any dispatcher runs: low first, so only priority can put high ahead.
    low = app.low.enqueue("low")
    high = app.high.enqueue("high")
    rows = {row["id"]: row for row in (selectors.get_task(low.id), selectors.get_task(high.id))}
    assert (rows[low.id]["priority"], rows[high.id]["priority"]) == (-50, 50)
    # One dispatcher taking one task at a time: the claim order is the run order.
    with supervisor_running(
        ray_cluster["namespace"], dispatchers=1, claim_batch=1, max_in_flight=1
    ):
        ran_low = wait_finished(app.low, low.id)
        ran_high = wait_finished(app.high, high.id)
    assert (ran_low.return_value, ran_high.return_value) == ("low", "high")
    assert ran_high.started_at < ran_low.started_at
    assert ran_high.finished_at <= ran_low.started_at
