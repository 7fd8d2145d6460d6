"""Leases: renewal, release, and the reaper (expired leases and dead dispatchers)."""

from datetime import UTC, datetime, timedelta

import pytest

from tasks import heartbeats, queue, selectors
from tasks.models import Dispatcher
from tasks.policy import RetryPolicy

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = RetryPolicy(max_attempts=2, backoff_seconds=0.0, backoff_max_steps=1)


def _claim(n: int = 1, dispatcher: str = "d1", **claim_kwargs) -> list[dict]:
    queue.enqueue_many([{"type": "echo"} for _ in range(n)])
    claimed = queue.claim(dispatcher=dispatcher, batch=n, **claim_kwargs)
    assert len(claimed) == n
    return claimed


def _beat(name: str, age_seconds: float = 0.0) -> None:
    heartbeats.beat(name=name, node="node-1", pid=123, in_flight=1, processed=0)
    if age_seconds:
        old = datetime.now(UTC) - timedelta(seconds=age_seconds)
        Dispatcher.objects.filter(name=name).update(last_beat_at=old)


def test_renew_leases_extends_held_leases_and_reports_cancel_requests():
    a, b = _claim(2, lease_seconds=10)
    queue.cancel(b["id"])
    held = queue.renew_leases(dispatcher="d1", attempts={a["id"]: 1, b["id"]: 1}, lease_seconds=300)
    assert held == {a["id"]: False, b["id"]: True}
    lease = selectors.get_task(a["id"])["lease_expires_at"]
    assert lease - datetime.now(UTC) > timedelta(seconds=250)


def test_renew_leases_drops_attempts_no_longer_held():
    a, b, c = _claim(3)
    queue.complete(task_id=c["id"], dispatcher="d1", attempt=1, result=None)
    held = queue.renew_leases(
        dispatcher="d1", attempts={a["id"]: 1, b["id"]: 2, c["id"]: 1}, lease_seconds=300
    )
    assert held == {a["id"]: False}
    assert queue.renew_leases(dispatcher="d2", attempts={a["id"]: 1}) == {}
    assert queue.renew_leases(dispatcher="d1", attempts={}) == {}


def test_release_returns_the_task_to_queued_without_consuming_the_attempt():
    (task,) = _claim()
    assert queue.release(dispatcher="d1", attempts={task["id"]: 1}) == [task["id"]]
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["attempts"], stored["locked_by"]) == ("QUEUED", 0, None)
    (again,) = queue.claim(dispatcher="d2", batch=1)
    assert again["attempts"] == 1


def test_release_of_a_cancelled_attempt_ends_cancelled_and_stale_releases_do_nothing():
    a, b = _claim(2)
    queue.cancel(a["id"])
    released = queue.release(dispatcher="d1", attempts={a["id"]: 1, b["id"]: 2})
    assert released == [a["id"]]
    assert selectors.get_task(a["id"])["status"] == "CANCELLED"
    assert selectors.get_task(b["id"])["status"] == "RUNNING"


def test_reap_retries_a_task_whose_lease_ran_out():
    _beat("d1")
    (task,) = _claim(lease_seconds=-1)
    (reaped,) = queue.reap(heartbeat_timeout=60, policy=POLICY)
    assert reaped["id"] == task["id"]
    assert reaped["status"] == "RETRY"
    assert "lease" in reaped["reason"]
    stored = selectors.get_task(task["id"])
    assert (stored["status"], stored["locked_by"], stored["lease_expires_at"]) == (
        "RETRY",
        None,
        None,
    )
    assert stored["error"].startswith("reaped")
    assert stored["error_history"][-1]["error"] == stored["error"]


def test_reap_fails_a_task_at_its_last_attempt():
    _beat("d1")
    (task,) = _claim(lease_seconds=-1)
    assert queue.reap(heartbeat_timeout=60, policy=POLICY)[0]["status"] == "RETRY"
    queue.claim(dispatcher="d1", batch=1, lease_seconds=-1)
    (reaped,) = queue.reap(heartbeat_timeout=60, policy=POLICY)
    assert (reaped["id"], reaped["status"]) == (task["id"], "FAILED")
    assert selectors.get_task(task["id"])["attempts"] == 2


def test_reap_cancels_a_task_whose_cancel_was_requested():
    _beat("d1")
    (task,) = _claim(lease_seconds=-1)
    queue.cancel(task["id"])
    (reaped,) = queue.reap(heartbeat_timeout=60, policy=POLICY)
    assert reaped["status"] == "CANCELLED"
    assert selectors.get_task(task["id"])["status"] == "CANCELLED"


def test_reap_rescues_tasks_of_a_dispatcher_whose_heartbeat_stopped():
    _beat("dead", age_seconds=120)
    _beat("alive")
    (orphan,) = _claim(dispatcher="dead", lease_seconds=600)
    (kept,) = _claim(dispatcher="alive", lease_seconds=600)
    (reaped,) = queue.reap(heartbeat_timeout=30, policy=POLICY)
    assert reaped["id"] == orphan["id"]
    assert "heartbeat" in reaped["reason"]
    assert selectors.get_task(orphan["id"])["status"] == "RETRY"
    assert selectors.get_task(kept["id"])["status"] == "RUNNING"


def test_reap_rescues_tasks_of_a_dispatcher_that_never_sent_a_heartbeat():
    (orphan,) = _claim(dispatcher="ghost", lease_seconds=600)
    assert [row["id"] for row in queue.reap(heartbeat_timeout=30, policy=POLICY)] == [orphan["id"]]


def test_reap_leaves_live_leases_alone():
    _beat("d1")
    tasks = _claim(3, lease_seconds=600)
    assert queue.reap(heartbeat_timeout=30, policy=POLICY) == []
    assert {selectors.get_task(t["id"])["status"] for t in tasks} == {"RUNNING"}


def test_forget_dispatcher_removes_its_heartbeat():
    _beat("d1")
    heartbeats.forget_dispatcher("d1")
    assert not Dispatcher.objects.filter(name="d1").exists()


@pytest.mark.django_db
def test_forget_dead_dispatchers_keeps_live_rows_and_rows_holding_tasks():
    heartbeats.beat(name="alive", node="n", pid=1, in_flight=0, processed=0)
    heartbeats.beat(name="dead-idle", node="n", pid=2, in_flight=0, processed=0)
    heartbeats.beat(name="dead-busy", node="n", pid=3, in_flight=1, processed=0)
    queue.enqueue(type="echo")
    queue.claim(dispatcher="dead-busy", batch=1)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    Dispatcher.objects.filter(name__startswith="dead").update(last_beat_at=long_ago)

    assert heartbeats.forget_dead_dispatchers(silent_for=600) == 1
    assert set(Dispatcher.objects.values_list("name", flat=True)) == {"alive", "dead-busy"}
