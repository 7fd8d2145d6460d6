"""Enqueue and claim: what gets claimed, in which order, and what a claim records."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from tasks import queue, selectors
from tasks.models import Task
from tasks.policy import RetryPolicy

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_returns_the_stored_task():
    task = queue.enqueue(
        type="echo",
        params={"text": "hi"},
        description="say hi",
        domain="tests",
        drift_score=0.25,
        priority=3,
        max_attempts=2,
    )
    assert task["status"] == "QUEUED"
    assert task["attempts"] == 0
    assert task == selectors.get_task(task["id"])
    assert (task["type"], task["params"], task["description"], task["domain"]) == (
        "echo",
        {"text": "hi"},
        "say hi",
        "tests",
    )
    assert (task["drift_score"], task["priority"], task["max_attempts"]) == (0.25, 3, 2)


def test_enqueue_many_inserts_in_one_round_trip(django_assert_max_num_queries):
    specs = [{"type": "echo", "params": {"n": n}} for n in range(200)]
    with django_assert_max_num_queries(1) as captured:
        ids = queue.enqueue_many(specs)
    inserts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    assert len(ids) == len(set(ids)) == 200
    stored = dict(Task.objects.values_list("id", "params"))
    assert {str(k): v for k, v in stored.items()} == {ids[n]: {"n": n} for n in range(200)}


def test_enqueue_many_of_nothing_inserts_nothing():
    assert queue.enqueue_many([]) == []


def test_claim_takes_highest_priority_first_then_oldest():
    low_old = queue.enqueue(type="a")["id"]
    time.sleep(0.005)
    high = queue.enqueue(type="b", priority=5)["id"]
    time.sleep(0.005)
    low_new = queue.enqueue(type="c")["id"]
    order = [queue.claim(dispatcher="d1", batch=1)[0]["id"] for _ in range(3)]
    assert order == [high, low_old, low_new]
    assert queue.claim(dispatcher="d1", batch=1) == []


def test_a_batch_comes_back_in_claim_order():
    # Many ids, so their key order would almost surely differ from the claim order.
    ids = [queue.enqueue(type="a", priority=n % 3)["id"] for n in range(30)]
    by_priority = sorted(range(30), key=lambda n: (-(n % 3), n))
    claimed = queue.claim(dispatcher="d1", batch=30)
    assert [row["id"] for row in claimed] == [ids[n] for n in by_priority]


def test_a_task_whose_run_after_is_in_the_future_is_not_claimable():
    later = queue.enqueue(type="later", run_after=datetime.now(UTC) + timedelta(hours=1))
    due = queue.enqueue(type="due", run_after=datetime.now(UTC) - timedelta(seconds=1))
    claimed = queue.claim(dispatcher="d1", batch=10)
    assert [row["id"] for row in claimed] == [due["id"]]
    assert selectors.get_task(later["id"])["status"] == "QUEUED"


def test_claim_marks_running_with_owner_lease_and_the_next_attempt():
    task = queue.enqueue(type="echo", params={"x": 1})
    before = datetime.now(UTC) - timedelta(seconds=1)
    (claimed,) = queue.claim(dispatcher="d1", batch=5, lease_seconds=60)
    assert claimed["id"] == task["id"]
    assert claimed["params"] == {"x": 1}
    assert claimed["status"] == "RUNNING"
    assert claimed["attempts"] == 1
    assert claimed["locked_by"] == "d1"
    assert before <= claimed["locked_at"] <= datetime.now(UTC) + timedelta(seconds=1)
    lease = claimed["lease_expires_at"] - claimed["locked_at"]
    assert timedelta(seconds=59) <= lease <= timedelta(seconds=61)
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["attempts"], stored["locked_by"]) == ("RUNNING", 1, "d1")


def test_claim_respects_the_batch_size_and_skips_running_and_finished_tasks():
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(5)])
    first = queue.claim(dispatcher="d1", batch=3)
    second = queue.claim(dispatcher="d2", batch=3)
    assert len(first) == 3 and len(second) == 2
    assert sorted(row["id"] for row in first + second) == sorted(ids)
    assert queue.claim(dispatcher="d3", batch=3) == []


def test_a_retry_whose_backoff_has_passed_is_claimable_again():
    task = queue.enqueue(type="flaky")
    queue.claim(dispatcher="d1", batch=1)
    policy = RetryPolicy(max_attempts=5, backoff_seconds=0.0, backoff_max_steps=1)
    assert (
        queue.fail(task_id=task["id"], dispatcher="d1", attempt=1, error="boom", policy=policy)
        == "RETRY"
    )
    (again,) = queue.claim(dispatcher="d2", batch=1)
    assert (again["id"], again["attempts"], again["locked_by"]) == (task["id"], 2, "d2")


def test_the_claim_statement_uses_the_partial_claimable_index():
    queue.enqueue_many([{"type": "echo"} for _ in range(50)])
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        # EXPLAIN without ANALYZE plans the claim without running it.
        cursor.execute(f"EXPLAIN {queue.claim_statement()}", [50, "d1", 30.0])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    assert "tasks_claimable_idx" in plan


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_a_dispatchers_claims_commit_without_waiting_for_the_disk_and_others_wait():
    queue.enqueue(type="echo")
    queue.claim(dispatcher="d1", batch=1)
    assert _synchronous_commit() == "on"
    queue.enqueue(type="echo")
    [row] = queue.claim(dispatcher="d1", batch=1, durable=False)
    assert row["type"] == "echo"
    assert _synchronous_commit() == "off"
