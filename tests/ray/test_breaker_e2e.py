"""The circuit breaker on a local Ray: the Coordinator dies, dispatchers stop claiming and say
so (heartbeat → /coordinator/health, /metrics), then resume by themselves once it is back."""

from __future__ import annotations

import time

import pytest

from organism.dispatcher import COORDINATOR_UNAVAILABLE, DispatcherConfig
from organism.supervisor import Supervisor, SupervisorOptions
from tasks import queue, selectors
from tasks.selectors import list_dispatchers

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

PROBE_SECONDS = 1.5
CONFIG = DispatcherConfig(
    claim_batch=20,
    max_in_flight=100,
    lease_seconds=10.0,
    heartbeat_seconds=0.3,
    poll_seconds=0.2,
    grace_seconds=2.0,
    max_attempts=3,
    backoff_seconds=0.0,
    backoff_max_steps=10,
    breaker_threshold=2,
    breaker_probe_seconds=PROBE_SECONDS,
)


@pytest.fixture
def booted(ray_cluster, transactional_db):
    """Coordinator and one dispatcher started; no supervising thread, so nothing restarts
    the Coordinator behind the test's back."""
    options = SupervisorOptions(
        dispatchers=1,
        address="",
        namespace=ray_cluster["namespace"],
        interval=0.5,
        heartbeat_timeout=10.0,
        config=CONFIG,
    )
    boss = Supervisor(options, out=lambda line: None)
    boss.bootstrap()
    yield boss
    boss.stop_dispatchers()


def wait_for(check, timeout: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(every)


def circuits() -> set[str]:
    return {row["circuit"] for row in list_dispatchers()}


def test_a_dead_coordinator_opens_the_circuit_and_a_live_one_closes_it(
    booted, client, admin_client, settings
):
    from organism.ray import actors
    from organism.ray.clients import kill_and_wait

    # Dead before the round below pings it: ray.kill alone returns before the actor is gone,
    # and a ping that still gets through publishes a healthy Coordinator.
    kill_and_wait(actors.get_coordinator(), actors.COORDINATOR_NAME, booted.options.namespace)
    # One supervisor round sees it and tells the web (without restarting it yet).
    booted.publish(booted.ensure_coordinator())
    first = queue.enqueue(type="echo")["id"]  # wakes the dispatcher, which finds no Coordinator
    wait_for(lambda: circuits() == {"open"} or circuits() == {"half_open"})

    ids = queue.enqueue_many([{"type": "echo", "params": {"i": i}} for i in range(10)])
    time.sleep(2 * PROBE_SECONDS)  # probes fail meanwhile
    assert {(selectors.get_task(t)["status"], selectors.get_task(t)["attempts"]) for t in ids} == {
        ("QUEUED", 0)
    }

    health = admin_client.get("/coordinator/health")
    assert health.status_code == 503
    assert {d["circuit"] for d in health.json()["dispatchers"]} <= {"open", "half_open"}
    settings.SEEDCORE_METRICS_PUBLIC = True
    text = client.get("/metrics").content.decode()
    assert "seedcore_coordinator_up 0.0" in text
    assert 'seedcore_dispatcher_circuit_open{dispatcher="seedcore_dispatcher_0/' in text
    assert "seedcore_tasks_circuit_opened_total" in text

    wait_for(lambda: booted.ensure_coordinator() is not None, timeout=120, every=0.5)
    for task_id in [first, *ids]:
        task = wait_for(
            lambda t=task_id: (
                selectors.get_task(t)["status"] == "COMPLETED" and selectors.get_task(t)
            )
        )
        # Tasks queued while the circuit was open ran once; the first may have lost an attempt
        # to the dead Coordinator (if the dispatcher still held its handle) but no more.
        assert task["attempts"] <= (2 if task_id == first else 1)
    assert {e["error"] for e in selectors.get_task(first)["error_history"]} <= {
        COORDINATOR_UNAVAILABLE
    }
    wait_for(lambda: circuits() == {"closed"})
