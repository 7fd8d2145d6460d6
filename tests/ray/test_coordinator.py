"""The Coordinator actor with its real organism on a local Ray: routing, failures, timeouts,
cancellation, streaming batches and every control type."""

from __future__ import annotations

import time
import uuid

import pytest

from organism.messages import Outcome, OutcomeStatus, TaskPayload, pack_tasks, unpack_outcomes

pytestmark = pytest.mark.ray

# Two small organs keep the actor count low: 1 Coordinator + 2 organs + 2 agents.
TEST_ORGANS = [
    {"id": "cognitive_organ_1", "kind": "cognitive", "agents": 1, "types": ["test"]},
    {"id": "utility_organ_1", "kind": "utility", "agents": 1, "types": ["echo", "fail", "sleep"]},
]


TASK_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def coord(ray_cluster):
    """A Coordinator of its own namespace, so its small organism and short task timeout do
    not meet other tests' Coordinator."""
    import ray

    from organism.ray import actors

    namespace = f"{ray_cluster['namespace']}-coordinator"
    handle = actors.get_or_create_coordinator(
        namespace=namespace, organs=TEST_ORGANS, task_timeout=TASK_TIMEOUT
    )
    assert actors.get_or_create_coordinator(namespace=namespace) == handle  # reused
    assert ray.get(handle.ping.remote(), timeout=60) == "pong"
    assert ray.get(handle.initialize.remote(), timeout=120) is True
    return handle


def task(type: str, params: dict | None = None, **extra) -> TaskPayload:
    return TaskPayload(str(uuid.uuid4()), type, 1, params or {}, **extra)


def handle(coord, payload: TaskPayload, timeout: float = 60) -> Outcome:
    import ray

    return unpack_outcomes(ray.get(coord.run.remote(pack_tasks([payload])), timeout=timeout))[0]


def chunks(coord, tasks: list[TaskPayload], timeout: float = 30):
    """The outcome lists of ``run_chunks``, each with the time it arrived."""
    import ray

    for ref in coord.run_chunks.remote(pack_tasks(tasks)):
        yield unpack_outcomes(ray.get(ref, timeout=timeout)), time.monotonic()


def test_echo_completes_with_output_and_fast_routing(coord):
    payload = task("echo", {"hello": "world"})
    out = handle(coord, payload)
    assert out.ok is True, out
    assert out.task_id == payload.id and out.attempt == 1
    assert out.output == {"hello": "world"}
    routing = out.result["routing"]
    assert routing["path"] == "fast"
    assert routing["organ_id"] == "utility_organ_1"
    assert routing["agent_id"] == "utility_organ_1_agent_0"
    assert routing["duration_ms"] >= 0
    assert out.error is None


def test_drift_at_threshold_escalates_to_cognitive_organ(coord):
    out = handle(coord, task("echo", {"x": 1}, drift_score=0.5))
    assert out.ok is True, out
    assert out.routing.path == "escalated"
    assert out.routing.organ_id == "cognitive_organ_1"


def test_smoke_test_type_reports(coord):
    payload = task("test")
    out = handle(coord, payload)
    assert out.ok is True, out
    assert out.output["status"] == "ok"
    assert out.output["task_id"] == payload.id
    assert out.routing.organ_id == "cognitive_organ_1"


def test_failure_carries_error_and_traceback(coord):
    out = handle(coord, task("fail", {"message": "boom"}))
    assert out.status is OutcomeStatus.ERROR and out.result is None
    assert out.error == "RuntimeError: boom"
    assert "Traceback" in out.traceback and "boom" in out.traceback


def test_permanent_failure(coord):
    out = handle(coord, task("fail", {"permanent": True}))
    assert out.status is OutcomeStatus.PERMANENT
    assert out.error.startswith("PermanentError")


def test_unknown_type_is_permanent(coord):
    out = handle(coord, task("no_such_type"))
    assert out.status is OutcomeStatus.PERMANENT
    assert out.error == "no handler registered for type 'no_such_type'"


def test_timeout_ends_the_attempt(coord):
    started = time.monotonic()
    out = handle(coord, task("sleep", {"seconds": 30}))
    elapsed = time.monotonic() - started
    assert out.status is OutcomeStatus.TIMED_OUT
    assert out.error == f"timed out after {TASK_TIMEOUT:g} s"
    assert TASK_TIMEOUT - 0.5 < elapsed < TASK_TIMEOUT + 5


def test_cancel_stops_a_running_sleep(coord):
    import ray

    payload = task("sleep", {"seconds": 30})
    ref = coord.run.remote(pack_tasks([payload]))
    time.sleep(0.5)  # let it start on the agent
    started = time.monotonic()
    assert ray.get(coord.cancel.remote(payload.id), timeout=10) is True
    [out] = unpack_outcomes(ray.get(ref, timeout=10))
    assert time.monotonic() - started < 2
    assert out.status is OutcomeStatus.CANCELLED and out.error == "cancelled"
    assert ray.get(coord.cancel.remote(payload.id), timeout=10) is False  # no longer running


def test_batch_streams_outcomes_as_they_finish_many_per_message(coord):
    slow = task("sleep", {"seconds": 1.5})
    fast = [task("echo", {"i": i}) for i in range(100)]
    unknown = task("nope")
    received = list(chunks(coord, [slow, *fast, unknown]))
    seen = [(out, at) for chunk, at in received for out in chunk]
    ids = [out.task_id for out, _ in seen]
    assert sorted(ids) == sorted(t.id for t in [slow, *fast, unknown])
    assert len(received) < 100  # outcomes finished together travel together
    assert ids[-1] == slow.id  # the slow one arrives last, after every fast one
    outcomes = {out.task_id: out for out, _ in seen}
    assert all(outcomes[t.id].output == t.params for t in fast)
    assert outcomes[unknown.id].status is OutcomeStatus.PERMANENT
    assert outcomes[slow.id].ok is True
    # The fast outcomes were delivered well before the slow one finished.
    fast_arrival = max(at for out, at in seen if out.task_id != slow.id)
    assert seen[-1][1] - fast_arrival > 1.0


def test_cancel_inside_a_batch(coord):
    import ray

    slow, fast = task("sleep", {"seconds": 30}), task("echo")
    stream = coord.run_chunks.remote(pack_tasks([slow, fast]))  # one agent: one batch call
    time.sleep(0.7)
    started = time.monotonic()
    assert ray.get(coord.cancel.remote(slow.id), timeout=10) is True
    outcomes = {
        out.task_id: out for ref in stream for out in unpack_outcomes(ray.get(ref, timeout=10))
    }
    assert time.monotonic() - started < 2  # well before the 3 s task timeout
    assert outcomes[slow.id].status is OutcomeStatus.CANCELLED
    assert outcomes[fast.id].ok is True


def test_a_killed_agent_is_replaced(coord):
    import ray

    from organism.ray import actors

    namespace = f"{ray.get_runtime_context().namespace}-coordinator"
    name = actors.agent_actor_name("utility_organ_1_agent_0")
    ray.kill(ray.get_actor(name, namespace=namespace))
    deadline = time.monotonic() + 30
    outcomes = []
    while time.monotonic() < deadline:
        outcomes.append(handle(coord, task("echo", {"n": len(outcomes)})))
        if outcomes[-1].ok:
            break
        time.sleep(0.2)
    assert outcomes[-1].ok is True, outcomes
    # Failures on the way are Ray's (the dead agent: system failures, saying so) or
    # SeedCore's, and retryable.
    lost = [out for out in outcomes[:-1] if out.status is OutcomeStatus.SYSTEM]
    assert {out.status for out in outcomes[:-1]} <= {
        OutcomeStatus.UNAVAILABLE,
        OutcomeStatus.SYSTEM,
    }
    assert all(out.kind == "actor_died" and out.run.placement.actor_id for out in lost)
    assert ray.get_actor(name, namespace=namespace) is not None


def test_status_summary_and_metrics(coord):
    from organism.ray import driver

    handle(coord, task("echo"))
    status = handle(coord, task("get_organism_status"))
    assert status.ok is True, status
    organs = {organ["organ_id"]: organ for organ in status.output}
    assert set(organs) == {"cognitive_organ_1", "utility_organ_1"}
    assert organs["utility_organ_1"]["kind"] == "utility"
    agent = organs["utility_organ_1"]["agents"][0]
    assert agent["alive"] is True and agent["tasks_processed"] >= 1
    assert {"successes", "failures", "capability", "load", "last_task_at"} <= set(agent)

    summary = handle(coord, task("get_organism_summary")).output
    assert summary["initialized"] is True
    assert summary["organ_count"] == 2 and summary["total_agent_count"] == 2
    assert {organ["kind"] for organ in summary["organs"]} == {"cognitive", "utility"}
    # What rundispatcher's supervisor asks for directly (organism.ray.driver).
    assert driver.organism_summary(coord, 60)["organ_count"] == 2
    assert driver.ping(coord, 10) > 0

    metrics = handle(coord, task("get_metrics")).output
    assert metrics["tasks_processed"] >= 1 and metrics["agent_count"] == 2


def test_execute_on_organ_and_random_organ(coord):
    out = handle(
        coord,
        task(
            "execute_on_organ",
            {"organ_id": "cognitive_organ_1", "task": {"type": "echo", "params": {"a": 1}}},
        ),
    )
    assert out.ok is True, out
    assert out.output["output"] == {"a": 1}
    assert out.output["routing"]["organ_id"] == "cognitive_organ_1"

    out = handle(coord, task("execute_on_random_organ", {"task": {"type": "echo"}}))
    assert out.ok is True, out
    assert out.output["routing"]["organ_id"] in {"cognitive_organ_1", "utility_organ_1"}

    missing = handle(coord, task("execute_on_organ", {"organ_id": "nope", "task": {"type": "x"}}))
    assert missing.status is OutcomeStatus.PERMANENT
    assert "no handler registered for type 'x'" in missing.error
    bad_organ = handle(
        coord, task("execute_on_organ", {"organ_id": "nope", "task": {"type": "echo"}})
    )
    assert bad_organ.permanent is True and "no organ 'nope'" in bad_organ.error


def test_shutdown_then_initialize(coord):
    import ray

    from organism.ray import actors

    namespace = f"{ray.get_runtime_context().namespace}-coordinator"
    assert ray.get_actor(actors.organ_actor_name("utility_organ_1"), namespace=namespace)
    down = handle(coord, task("shutdown_organism"))
    assert down.ok is True and down.output["organs_stopped"] == 2
    for name in (actors.organ_actor_name("utility_organ_1"), "seedcore_utility_organ_1_agent_0"):
        with pytest.raises(ValueError):
            ray.get_actor(name, namespace=namespace)
    refused = handle(coord, task("echo"))
    assert refused.status is OutcomeStatus.UNAVAILABLE and "shut down" in refused.error
    summary = handle(coord, task("get_organism_summary")).output
    assert summary["initialized"] is False and summary["organ_count"] == 0

    up = handle(coord, task("initialize_organism"), timeout=120)
    assert up.ok is True, up
    assert up.output["total_agent_count"] == 2
    assert handle(coord, task("echo", {"back": True})).output == {"back": True}


def test_a_restarted_coordinator_reuses_the_organism(coord):
    """Last in this module: it kills the module's Coordinator."""
    import ray

    from organism.messages import CoordinatorUnavailable
    from organism.ray import actors

    namespace = f"{ray.get_runtime_context().namespace}-coordinator"
    agent_name = actors.agent_actor_name("utility_organ_1_agent_0")
    agent_before = ray.get_actor(agent_name, namespace=namespace)._actor_id
    ray.kill(coord)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            actors.get_coordinator(namespace)
        except CoordinatorUnavailable as exc:
            assert "rundispatcher" in str(exc)
            break
        time.sleep(0.1)
    fresh = actors.get_or_create_coordinator(
        namespace=namespace, organs=TEST_ORGANS, task_timeout=TASK_TIMEOUT
    )
    out = handle(fresh, task("echo", {"after": "restart"}), timeout=120)
    assert out.ok is True and out.output == {"after": "restart"}
    assert ray.get_actor(agent_name, namespace=namespace)._actor_id == agent_before
