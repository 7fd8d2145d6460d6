"""Each attempt's run joins the task's ``runs`` by the fenced statement that writes its
outcome; attempts Ray lost (SYSTEM failures) are retried at once outside the attempts budget."""

from datetime import UTC, datetime, timedelta

import pytest

from tasks import heartbeats, queue, selectors
from tasks.models import Task
from tasks.policy import RUNS_MAX_ENTRIES, RetryPolicy

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = RetryPolicy(
    max_attempts=2, backoff_seconds=30.0, backoff_max_steps=2, max_system_retries=2
)


STARTED, FINISHED = 1796238000.25, 1796238001.5  # 2026-12-02T19:00:00.25Z, +1.25 s


def run_record(outcome: str, log: str | None = None) -> tuple:
    """A run as the outcome writes take it (tasks.queue.RUN_FIELDS)."""
    return (
        "ab" * 28,
        "10.0.0.7",
        4242,
        "cd" * 16,
        "utility_organ_1",
        STARTED,
        FINISHED,
        outcome,
        log,
    )


def run_entry(attempt: int, outcome: str, log: str | None = None) -> dict:
    """The entry the database makes of it."""
    return {
        "attempt": attempt,
        "node_id": "ab" * 28,
        "node_ip": "10.0.0.7",
        "pid": 4242,
        "actor_id": "cd" * 16,
        "organ_id": "utility_organ_1",
        "started_at": "2026-12-02T19:00:00.25+00:00",
        "finished_at": "2026-12-02T19:00:01.5+00:00",
        "outcome": outcome,
        "log": log,
    }


def claim_one(task_id: str, dispatcher: str = "d1") -> int:
    """Make the task due now (skipping any backoff), claim it; returns the attempt."""
    due = datetime.now(UTC) - timedelta(seconds=1)
    Task.objects.filter(id=task_id, status__in=["QUEUED", "RETRY"]).update(run_after=due)
    (claimed,) = queue.claim(dispatcher=dispatcher, batch=1)
    assert claimed["id"] == task_id
    return claimed["attempts"]


def test_a_completion_appends_its_run_and_a_stale_one_appends_nothing():
    ids = queue.enqueue_many([{"type": "echo"}, {"type": "echo"}, {"type": "echo"}])
    claimed = {row["id"]: row["attempts"] for row in queue.claim(dispatcher="d1", batch=3)}
    results = [
        (ids[0], claimed[ids[0]], {"n": 0}, run_record("completed", "hello\n")),
        (ids[1], claimed[ids[1]], {"n": 1}),  # no run reported (a control type)
        (ids[2], 9, {"n": 2}, run_record("completed")),  # stale: the wrong attempt
    ]
    assert queue.complete_many(dispatcher="d1", results=results) == {
        ids[0]: "COMPLETED",
        ids[1]: "COMPLETED",
    }
    assert selectors.get_task(ids[0])["runs"] == [run_entry(1, "completed", "hello\n")]
    assert selectors.get_task(ids[1])["runs"] == []
    stale = selectors.get_task(ids[2])
    assert (stale["status"], stale["runs"]) == ("RUNNING", [])


def test_runs_keep_their_newest_entries():
    task_id = queue.enqueue(type="echo")["id"]
    old = [run_entry(n, "error") for n in range(1, RUNS_MAX_ENTRIES + 1)]
    Task.objects.filter(id=task_id).update(runs=old, attempts=RUNS_MAX_ENTRIES)
    attempt = claim_one(task_id)
    assert attempt == RUNS_MAX_ENTRIES + 1
    queue.complete_many(
        dispatcher="d1", results=[(task_id, attempt, None, run_record("completed"))]
    )
    runs = selectors.get_task(task_id)["runs"]
    assert len(runs) == RUNS_MAX_ENTRIES
    assert [r["attempt"] for r in runs] == list(range(2, RUNS_MAX_ENTRIES + 2))


def test_a_failure_appends_its_run_and_keeps_the_backoff_rule():
    task_id = queue.enqueue(type="echo")["id"]
    attempt = claim_one(task_id)
    status = queue.fail(
        task_id=task_id,
        dispatcher="d1",
        attempt=attempt,
        error="RuntimeError: boom",
        policy=POLICY,
        run=run_record("error", "tried\n"),
    )
    assert status == "RETRY"
    task = selectors.get_task(task_id)
    assert task["runs"] == [run_entry(1, "error", "tried\n")]
    assert task["run_after"] - datetime.now(UTC) > timedelta(seconds=20)  # backed off
    assert task["system_failures"] == 0


def test_a_system_failure_retries_at_once_with_the_attempts_budget_untouched():
    # max_attempts 2: two ordinary failures would fail it. Ray losing attempts does not.
    task_id = queue.enqueue(type="echo")["id"]
    for lost in (1, 2):
        attempt = claim_one(task_id)
        status = queue.fail(
            task_id=task_id,
            dispatcher="d1",
            attempt=attempt,
            error="system failure (actor_died): agent a_agent_0 failed",
            policy=POLICY,
            run=run_record("system", "[lost: actor_died]"),
            system="actor_died",
        )
        assert status == "RETRY"
        task = selectors.get_task(task_id)
        assert task["system_failures"] == lost
        assert task["run_after"] <= datetime.now(UTC)  # at once: no backoff
        assert task["error_history"][-1]["system"] == "actor_died"
        # Due now: the very next claim takes it, without waiting.
    attempt = claim_one(task_id)
    assert attempt == 3
    # An ordinary failure now is the budget's first (3 attempts - 2 lost = 1 of 2): RETRY.
    assert (
        queue.fail(task_id=task_id, dispatcher="d1", attempt=attempt, error="e", policy=POLICY)
        == "RETRY"
    )
    attempt = claim_one(task_id)
    assert queue.complete(task_id=task_id, dispatcher="d1", attempt=attempt, result=1) == (
        "COMPLETED"
    )
    task = selectors.get_task(task_id)
    assert (task["attempts"], task["system_failures"]) == (4, 2)
    assert [r["outcome"] for r in task["runs"]] == ["system", "system"]  # complete() sent none


def test_past_the_system_cap_the_task_fails_naming_why():
    task_id = queue.enqueue(type="echo")["id"]
    statuses = []
    for _ in range(3):
        attempt = claim_one(task_id)
        statuses.append(
            queue.fail(
                task_id=task_id,
                dispatcher="d1",
                attempt=attempt,
                error="system failure (node_died): agent a_agent_0 failed",
                policy=POLICY,
                system="node_died",
            )
        )
    assert statuses == ["RETRY", "RETRY", "FAILED"]
    task = selectors.get_task(task_id)
    assert task["status"] == "FAILED" and task["system_failures"] == 3
    assert task["error"].startswith(
        "Ray lost 3 attempts, more than SEEDCORE_MAX_SYSTEM_RETRIES (2); the last: "
        "system failure (node_died)"
    )


def test_a_system_failure_of_a_cancelled_task_ends_it_cancelled():
    task_id = queue.enqueue(type="echo")["id"]
    attempt = claim_one(task_id)
    queue.cancel(task_id)
    status = queue.fail(
        task_id=task_id, dispatcher="d1", attempt=attempt, error="lost", system="actor_died"
    )
    assert status == "CANCELLED"


def test_the_reaper_counts_the_budget_without_the_attempts_ray_lost():
    task_id = queue.enqueue(type="echo", max_attempts=1)["id"]
    attempt = claim_one(task_id)
    queue.fail(task_id=task_id, dispatcher="d1", attempt=attempt, error="lost", system="actor_died")
    claim_one(task_id)  # attempt 2, the budget's first
    heartbeats.beat(name="d1", node="n", pid=1, in_flight=1, processed=0)
    queue.renew_leases(dispatcher="d1", attempts={task_id: 2}, lease_seconds=-1)
    (reaped,) = queue.reap(heartbeat_timeout=60, policy=POLICY)
    assert reaped["status"] == "FAILED"  # 2 attempts - 1 lost = 1 of max_attempts 1


def test_run_now_gives_a_fresh_budget_and_keeps_the_runs():
    task_id = queue.enqueue(type="echo")["id"]
    attempt = claim_one(task_id)
    queue.fail(
        task_id=task_id,
        dispatcher="d1",
        attempt=attempt,
        error="x",
        policy=RetryPolicy(3, 0.0, 1, max_system_retries=0),
        run=dict(zip(queue.RUN_FIELDS, run_record("system"), strict=True)),  # a dict works too
        system="out_of_memory",
    )
    assert selectors.get_task(task_id)["status"] == "FAILED"
    task = queue.run_now(task_id)
    assert (task["status"], task["attempts"], task["system_failures"]) == ("QUEUED", 0, 0)
    assert [r["outcome"] for r in task["runs"]] == ["system"]
