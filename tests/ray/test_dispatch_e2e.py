"""The whole engine on a local Ray: queue rows → dispatcher actors → Coordinator → queue rows.

A real :class:`organism.supervisor.Supervisor` runs in a thread of the test process with
short intervals, as ``rundispatcher`` would; each test gets fresh dispatcher actors.
"""

from __future__ import annotations

import time

import pytest

from organism.dispatcher import COORDINATOR_UNAVAILABLE
from organism.supervisor import Supervisor
from tasks import queue, selectors
from tests.conftest import SUPERVISED_BACKOFF as BACKOFF

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]


def wait_for(check, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(every)


def finished(task_id: str, statuses=("COMPLETED", "FAILED", "CANCELLED")):
    task = selectors.get_task(task_id)
    return task if task["status"] in statuses else None


def test_echo_completes_with_output_and_routing_and_drift_escalates(supervised):
    fast = queue.enqueue(type="echo", params={"hello": "world"})["id"]
    escalated = queue.enqueue(type="echo", params={"x": 1}, drift_score=0.9)["id"]
    task = wait_for(lambda: finished(fast))
    assert task["status"] == "COMPLETED"
    assert task["result"]["output"] == {"hello": "world"}
    assert task["result"]["routing"]["path"] == "fast"
    assert {"organ_id", "agent_id", "duration_ms"} <= set(task["result"]["routing"])
    assert task["locked_by"].startswith("seedcore_dispatcher_")
    routing = wait_for(lambda: finished(escalated))["result"]["routing"]
    assert routing["path"] == "escalated"
    assert routing["organ_id"] == "cognitive_organ_1"


def test_a_failing_task_retries_with_backoff_then_fails_at_its_last_attempt(supervised):
    task_id = queue.enqueue(type="fail", max_attempts=2)["id"]
    first = wait_for(lambda: finished(task_id, ("RETRY", "FAILED")))
    assert first["status"] == "RETRY" and first["attempts"] == 1
    delay = (first["run_after"] - first["updated_at"]).total_seconds()
    assert delay == pytest.approx(BACKOFF * 1, abs=0.2)
    last = wait_for(lambda: finished(task_id))
    assert (last["status"], last["attempts"]) == ("FAILED", 2)
    assert [e["outcome"] for e in last["error_history"]] == ["RETRY", "FAILED"]
    assert "Traceback" in last["error_history"][0]["traceback"]


def test_an_unknown_type_fails_at_once(supervised):
    task_id = queue.enqueue(type="no_such_type")["id"]
    task = wait_for(lambda: finished(task_id))
    assert (task["status"], task["attempts"]) == ("FAILED", 1)
    assert task["error"] == "no handler registered for type 'no_such_type'"


def test_a_running_sleep_cancelled_ends_cancelled_within_seconds(supervised):
    task_id = queue.enqueue(type="sleep", params={"seconds": 60})["id"]
    wait_for(lambda: finished(task_id, ("RUNNING",)))
    time.sleep(0.3)  # let the handler start on its agent
    queue.cancel(task_id)
    asked = time.monotonic()
    task = wait_for(lambda: finished(task_id), timeout=10)
    assert task["status"] == "CANCELLED"
    assert time.monotonic() - asked < 5


def test_every_control_type_runs_through_the_queue(supervised):
    reads = {
        "get_organism_status": {},
        "get_organism_summary": {},
        "get_metrics": {},
        "execute_on_organ": {"organ_id": "utility_organ_1", "task": {"type": "echo"}},
        "execute_on_random_organ": {"task": {"type": "echo", "params": {"r": 1}}},
    }
    ids = {type: queue.enqueue(type=type, params=params)["id"] for type, params in reads.items()}
    for type, task_id in ids.items():
        task = wait_for(lambda task_id=task_id: finished(task_id))
        assert task["status"] == "COMPLETED", (type, task["error"])
    summary = selectors.get_task(ids["get_organism_summary"])["result"]["output"]
    assert summary["initialized"] is True and summary["organ_count"] == 3
    for type in ("shutdown_organism", "initialize_organism"):
        task_id = queue.enqueue(type=type)["id"]
        task = wait_for(lambda task_id=task_id: finished(task_id), timeout=90)
        assert task["status"] == "COMPLETED", (type, task["error"])
    echo = queue.enqueue(type="echo", params={"after": "restart"})["id"]
    assert wait_for(lambda: finished(echo))["result"]["output"] == {"after": "restart"}


def test_a_dispatcher_killed_mid_task_leaves_the_task_finished_exactly_once(supervised):
    import ray

    task_id = queue.enqueue(type="sleep", params={"seconds": 1})["id"]
    running = wait_for(lambda: finished(task_id, ("RUNNING",)))
    name = running["locked_by"].split("/")[0]
    ray.kill(ray.get_actor(name, namespace=supervised.options.namespace))
    task = wait_for(lambda: finished(task_id), timeout=40)
    assert task["status"] == "COMPLETED"
    assert task["attempts"] == 2
    assert task["locked_by"] != running["locked_by"]  # the new incarnation wrote it
    [reaped] = task["error_history"]
    assert reaped["dispatcher"] == running["locked_by"] and reaped["outcome"] == "RETRY"
    # The dead incarnation can never write: its fence no longer matches.
    assert (
        queue.complete(
            task_id=task_id, dispatcher=running["locked_by"], attempt=1, result={"late": True}
        )
        == queue.STALE
    )
    assert supervised.restarts >= 1


def test_a_killed_coordinator_is_restarted_and_the_queue_drains(supervised):
    import ray

    from organism.ray import actors

    ray.kill(actors.get_coordinator())
    ids = queue.enqueue_many([{"type": "echo", "params": {"i": i}} for i in range(20)])
    for task_id in ids:
        task = wait_for(lambda task_id=task_id: finished(task_id), timeout=90)
        assert task["status"] == "COMPLETED"
    assert ray.get(actors.get_coordinator().ping.remote(), timeout=10) == "pong"
    errors = {e["error"] for t in ids for e in selectors.get_task(t)["error_history"]}
    assert errors <= {COORDINATOR_UNAVAILABLE}


def test_the_supervisor_reuses_running_dispatchers_and_reports_status(supervised):
    import ray

    before = {i: h._actor_id.hex() for i, h in supervised.dispatchers.items()}
    second = Supervisor(supervised.options, out=lambda line: None)
    snapshot = second.tick()
    assert {i: h._actor_id.hex() for i, h in second.dispatchers.items()} == before
    assert sum(1 for s in snapshot["dispatchers"] if s["running"]) == 2
    line = second.status_line(snapshot)
    assert "dispatchers 2/2" in line and "coordinator" in line and "queued=" in line
    assert len(ray.util.list_named_actors()) >= 3
