"""Fenced outcome writes, the retry policy, cancel and run-now."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from tasks import heartbeats, queue, selectors
from tasks.ids import TaskNotFound
from tasks.models import Task
from tasks.policy import RetryPolicy

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = RetryPolicy(max_attempts=3, backoff_seconds=30.0, backoff_max_steps=2)


def _claimed(dispatcher: str = "d1", **spec) -> dict:
    task = queue.enqueue(type=spec.pop("type", "echo"), **spec)
    (claimed,) = queue.claim(dispatcher=dispatcher, batch=1)
    assert claimed["id"] == task["id"]
    return claimed


def _run_again(task_id: str, dispatcher: str = "d1") -> int:
    """Make a RETRY task due now (skipping its backoff) and claim it; returns the attempt."""
    due = datetime.now(UTC) - timedelta(seconds=1)
    Task.objects.filter(id=task_id, status="RETRY").update(run_after=due)
    (claimed,) = queue.claim(dispatcher=dispatcher, batch=1)
    return claimed["attempts"]


def test_complete_records_the_result():
    task = _claimed()
    outcome = queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result={"n": 2})
    assert outcome == "COMPLETED"
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["result"], stored["lease_expires_at"]) == (
        "COMPLETED",
        {"n": 2},
        None,
    )


def test_complete_many_writes_a_batch_and_reports_stale_ones_by_absence():
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(3)])
    claimed = {row["id"]: row["attempts"] for row in queue.claim(dispatcher="d1", batch=3)}
    results = [(task_id, claimed[task_id], {"id": task_id}) for task_id in ids]
    results[2] = (ids[2], 7, "wrong attempt")
    assert queue.complete_many(dispatcher="d1", results=results) == {
        ids[0]: "COMPLETED",
        ids[1]: "COMPLETED",
    }
    assert selectors.get_task(ids[0])["result"] == {"id": ids[0]}
    assert selectors.get_task(ids[2])["status"] == "RUNNING"


@pytest.mark.parametrize(("dispatcher", "attempt"), [("d2", 1), ("d1", 2), ("d1", 0)])
def test_a_write_from_the_wrong_dispatcher_or_attempt_is_stale(dispatcher, attempt):
    task = _claimed()
    assert (
        queue.complete(task_id=task["id"], dispatcher=dispatcher, attempt=attempt, result=1)
        == queue.STALE
    )
    assert (
        queue.fail(task_id=task["id"], dispatcher=dispatcher, attempt=attempt, error="x")
        == queue.STALE
    )
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["result"], stored["error"]) == ("RUNNING", None, None)


def test_a_stale_completion_after_a_reap_changes_nothing():
    task = _claimed()
    heartbeats.beat(name="d1", node="n", pid=1, in_flight=1, processed=0)
    queue.renew_leases(dispatcher="d1", attempts={task["id"]: 1}, lease_seconds=-1)
    (reaped,) = queue.reap(heartbeat_timeout=60, policy=RetryPolicy(3, 0.0, 1))
    assert (reaped["id"], reaped["status"]) == (task["id"], "RETRY")
    (again,) = queue.claim(dispatcher="d2", batch=1)
    assert again["attempts"] == 2
    before = selectors.get_task(task["id"])

    late = queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result="late")
    assert late == queue.STALE
    assert queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="late") == queue.STALE
    assert selectors.get_task(task["id"]) == before

    assert (
        queue.complete(task_id=task["id"], dispatcher="d2", attempt=2, result="ok") == "COMPLETED"
    )
    assert selectors.get_task(task["id"])["result"] == "ok"


def test_fail_retries_with_backoff_then_fails_at_max_attempts():
    task = _claimed()
    started = datetime.now(UTC)
    assert (
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e1", policy=POLICY)
        == "RETRY"
    )
    stored = selectors.get_task(task["id"])
    assert stored["status"] == "RETRY"
    assert stored["error"] == "e1"
    assert stored["lease_expires_at"] is None
    expected = started + timedelta(seconds=30)
    assert abs(stored["run_after"] - expected) < timedelta(seconds=5)
    assert queue.claim(dispatcher="d1", batch=1) == [], "backoff not over yet"

    assert _run_again(task["id"]) == 2
    assert (
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=2, error="e2", policy=POLICY)
        == "RETRY"
    )
    # backoff × min(attempts, steps): 30 × min(2, 2)
    assert abs(
        selectors.get_task(task["id"])["run_after"] - (datetime.now(UTC) + timedelta(seconds=60))
    ) < timedelta(seconds=5)

    assert _run_again(task["id"]) == 3
    assert (
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=3, error="e3", policy=POLICY)
        == "FAILED"
    )
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["error"], stored["attempts"]) == ("FAILED", "e3", 3)
    assert queue.claim(dispatcher="d1", batch=1) == []


def test_the_default_policy_comes_from_settings(settings):
    settings.SEEDCORE_MAX_ATTEMPTS = 1
    task = _claimed()
    assert queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e") == "FAILED"


def test_the_tasks_own_max_attempts_wins_over_the_handler_cap_and_settings(settings):
    settings.SEEDCORE_MAX_ATTEMPTS = 1
    task = _claimed(max_attempts=3)
    outcome = queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", max_attempts=1)
    assert outcome == "RETRY"


def test_the_handler_cap_wins_over_settings(settings):
    settings.SEEDCORE_MAX_ATTEMPTS = 1
    task = _claimed()
    outcome = queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", max_attempts=2)
    assert outcome == "RETRY"
    assert _run_again(task["id"]) == 2
    outcome = queue.fail(task_id=task["id"], dispatcher="d1", attempt=2, error="e", max_attempts=2)
    assert outcome == "FAILED"


def test_a_permanent_error_fails_at_once():
    task = _claimed()
    outcome = queue.fail(
        task_id=task["id"], dispatcher="d1", attempt=1, error="unknown type", permanent=True
    )
    assert outcome == "FAILED"
    assert selectors.get_task(task["id"])["status"] == "FAILED"


def test_error_history_keeps_every_attempts_error_and_traceback():
    task = _claimed()
    queue.fail(
        task_id=task["id"], dispatcher="d1", attempt=1, error="e1", traceback="tb1", policy=POLICY
    )
    _run_again(task["id"], dispatcher="d2")
    queue.fail(
        task_id=task["id"], dispatcher="d2", attempt=2, error="e2", traceback="tb2", policy=POLICY
    )
    history = selectors.get_task(task["id"])["error_history"]
    assert [
        (h["attempt"], h["error"], h["traceback"], h["dispatcher"], h["outcome"]) for h in history
    ] == [
        (1, "e1", "tb1", "d1", "RETRY"),
        (2, "e2", "tb2", "d2", "RETRY"),
    ]
    assert all(datetime.fromisoformat(h["at"]) for h in history)


def test_a_cancel_during_running_survives_that_attempts_completion():
    task = _claimed()
    cancelled = queue.cancel(task["id"])
    assert (cancelled["status"], cancelled["cancel_requested"]) == ("RUNNING", True)
    outcome = queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result="done")
    assert outcome == "CANCELLED"
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["result"]) == ("CANCELLED", "done")
    assert queue.claim(dispatcher="d1", batch=1) == []


def test_a_cancel_during_running_survives_that_attempts_failure():
    task = _claimed()
    queue.cancel(task["id"])
    assert queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="boom") == "CANCELLED"
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["error"]) == ("CANCELLED", "boom")
    assert queue.claim(dispatcher="d1", batch=1) == []


def test_cancel_of_a_queued_task_is_immediate():
    task = queue.enqueue(type="echo")
    assert queue.cancel(task["id"])["status"] == "CANCELLED"
    assert queue.claim(dispatcher="d1", batch=1) == []


def test_cancel_of_a_retry_task_is_immediate():
    task = _claimed()
    queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", policy=POLICY)
    assert queue.cancel(task["id"])["status"] == "CANCELLED"


def test_cancel_of_a_cancelled_task_is_a_no_op():
    task = queue.enqueue(type="echo")
    queue.cancel(task["id"])
    assert queue.cancel(task["id"])["status"] == "CANCELLED"


@pytest.mark.parametrize("finish", ["COMPLETED", "FAILED"])
def test_cancel_of_a_finished_task_is_refused_naming_its_status(finish):
    task = _claimed()
    if finish == "COMPLETED":
        queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
    else:
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", permanent=True)
    with pytest.raises(queue.TransitionNotAllowed, match=finish) as raised:
        queue.cancel(task["id"])
    assert raised.value.status == finish
    assert selectors.get_task(task["id"])["status"] == finish


def test_cancel_and_run_now_of_an_unknown_task_are_not_found():
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(TaskNotFound):
        queue.cancel(missing)
    with pytest.raises(TaskNotFound):
        queue.run_now(missing)


def _in_status(status: str) -> dict:
    if status == "QUEUED":
        return queue.enqueue(type="echo", run_after=datetime.now(UTC) + timedelta(hours=1))
    task = _claimed()
    if status == "RETRY":
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", policy=POLICY)
    elif status == "FAILED":
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="e", permanent=True)
    elif status == "CANCELLED":
        queue.cancel(task["id"])
        queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
    elif status == "COMPLETED":
        queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result=None)
    return selectors.get_task(task["id"])


@pytest.mark.parametrize("status", ["FAILED", "CANCELLED", "RETRY", "QUEUED"])
def test_run_now_queues_with_a_fresh_set_of_attempts(status):
    task = _in_status(status)
    assert task["status"] == status
    queued = queue.run_now(task["id"])
    assert (queued["status"], queued["attempts"], queued["cancel_requested"]) == (
        "QUEUED",
        0,
        False,
    )
    assert (queued["error"], queued["result"], queued["locked_by"]) == (None, None, None)
    assert queued["run_after"] <= datetime.now(UTC) + timedelta(seconds=1)
    (claimed,) = queue.claim(dispatcher="d9", batch=1)
    assert (claimed["id"], claimed["attempts"]) == (task["id"], 1)


def test_run_now_keeps_the_error_history():
    task = _in_status("FAILED")
    assert len(queue.run_now(task["id"])["error_history"]) == 1


@pytest.mark.parametrize("status", ["RUNNING", "COMPLETED"])
def test_run_now_is_refused_for_running_and_completed(status):
    task = _in_status(status)
    with pytest.raises(queue.TransitionNotAllowed, match=status):
        queue.run_now(task["id"])
    assert selectors.get_task(task["id"])["status"] == status


def test_error_and_traceback_are_cut_saying_how_much():
    from tasks.policy import ERROR_MAX_CHARS, TRACEBACK_MAX_CHARS

    task = _claimed()
    error, trace = "e" * (ERROR_MAX_CHARS + 12_345), "t" * (TRACEBACK_MAX_CHARS + 7)
    queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error=error, traceback=trace)
    stored = selectors.get_task(task["id"])
    assert stored["error"] == "e" * ERROR_MAX_CHARS + "… [cut: 12,345 more characters]"
    (entry,) = stored["error_history"]
    assert entry["error"] == stored["error"]
    assert entry["traceback"] == "t" * TRACEBACK_MAX_CHARS + "… [cut: 7 more characters]"


def test_error_history_keeps_only_its_newest_entries_through_run_now():
    from tasks.policy import ERROR_HISTORY_MAX_ENTRIES

    task = _claimed()
    for round_ in range(ERROR_HISTORY_MAX_ENTRIES + 5):
        if round_:
            queue.run_now(task["id"])
            queue.claim(dispatcher="d1", batch=1)
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error=f"boom {round_}")
    history = selectors.get_task(task["id"])["error_history"]
    assert len(history) == ERROR_HISTORY_MAX_ENTRIES
    assert [entry["error"] for entry in history] == [
        f"boom {n}" for n in range(5, ERROR_HISTORY_MAX_ENTRIES + 5)
    ]


def test_a_batch_completion_finds_its_rows_by_primary_key_whatever_else_runs():
    # Many other RUNNING rows (another dispatcher's, and statistics that say there are few):
    # the write must not read them, or a burst's writes cost more the further it goes.
    import json

    from tests.plans import root, tasks_nodes

    queue.enqueue_many([{"type": "echo"}] * 300)
    queue.claim(dispatcher="other", batch=290)
    mine = queue.claim(dispatcher="me", batch=10)
    done = json.dumps([[row["id"], row["attempts"], {"output": 1}] for row in mine])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + queue.complete_many_statement(), [done, "me"])
        nodes = tasks_nodes(root(cursor.fetchone()[0]))
    scans = [(node["Node Type"], node.get("Index Name")) for node in nodes]
    # By primary key (or, in a table this small, a plain read of it): never an index whose
    # cost depends on how many rows the planner believes are RUNNING.
    assert ("Index Scan", "tasks_pkey") in scans or ("Bitmap Index Scan", "tasks_pkey") in scans
    assert all(index in (None, "tasks_pkey") for _, index in scans), scans
    # One id per lookup: an array of the batch's ids in a lookup's condition is sorted again
    # for every row, which made a 400-row write a third slower.
    conditions = [node.get(key, "") for node in nodes for key in ("Index Cond", "Filter")]
    assert not any("ANY" in condition for condition in conditions), conditions
    written = queue.complete_many(
        dispatcher="me", results=[(row["id"], row["attempts"], {"output": 1}) for row in mine]
    )
    assert set(written.values()) == {"COMPLETED"} and len(written) == 10
