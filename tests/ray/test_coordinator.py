"""The Coordinator actor with its real organism on a local Ray: routing, failures, timeouts,
cancellation, streaming batches and every control type."""

from __future__ import annotations

import time
import uuid

import pytest

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

    from organism import actors

    namespace = f"{ray_cluster['namespace']}-coordinator"
    handle = actors.get_or_create_coordinator(
        namespace=namespace, organs=TEST_ORGANS, task_timeout=TASK_TIMEOUT
    )
    assert actors.get_or_create_coordinator(namespace=namespace) == handle  # reused
    assert ray.get(handle.ping.remote(), timeout=60) == "pong"
    assert ray.get(handle.initialize.remote(), timeout=120) is True
    return handle


def task(type: str, params: dict | None = None, **extra) -> dict:
    return {"id": str(uuid.uuid4()), "type": type, "params": params or {}, "attempts": 1, **extra}


def handle(coord, payload: dict, timeout: float = 60) -> dict:
    import ray

    return ray.get(coord.handle.remote(payload), timeout=timeout)


def test_echo_completes_with_output_and_fast_routing(coord):
    payload = task("echo", {"hello": "world"})
    out = handle(coord, payload)
    assert out["ok"] is True, out
    assert out["id"] == payload["id"] and out["attempt"] == 1
    assert out["result"]["output"] == {"hello": "world"}
    routing = out["result"]["routing"]
    assert routing["path"] == "fast"
    assert routing["organ_id"] == "utility_organ_1"
    assert routing["agent_id"] == "utility_organ_1_agent_0"
    assert routing["duration_ms"] >= 0
    assert out["error"] is None and out["cancelled"] is False


def test_drift_at_threshold_escalates_to_cognitive_organ(coord):
    out = handle(coord, task("echo", {"x": 1}, drift_score=0.5))
    assert out["ok"] is True, out
    assert out["result"]["routing"]["path"] == "escalated"
    assert out["result"]["routing"]["organ_id"] == "cognitive_organ_1"


def test_smoke_test_type_reports(coord):
    payload = task("test")
    out = handle(coord, payload)
    assert out["ok"] is True, out
    assert out["result"]["output"]["status"] == "ok"
    assert out["result"]["output"]["task_id"] == payload["id"]
    assert out["result"]["routing"]["organ_id"] == "cognitive_organ_1"


def test_failure_carries_error_and_traceback(coord):
    out = handle(coord, task("fail", {"message": "boom"}))
    assert out["ok"] is False and out["result"] is None
    assert out["error"] == "RuntimeError: boom"
    assert "Traceback" in out["traceback"] and "boom" in out["traceback"]
    assert out["permanent"] is False


def test_permanent_failure(coord):
    out = handle(coord, task("fail", {"permanent": True}))
    assert out["ok"] is False and out["permanent"] is True
    assert out["error"].startswith("PermanentError")


def test_unknown_type_is_permanent(coord):
    out = handle(coord, task("no_such_type"))
    assert out == {
        **out,
        "ok": False,
        "permanent": True,
        "error": "no handler registered for type 'no_such_type'",
    }


def test_timeout_ends_the_attempt(coord):
    started = time.monotonic()
    out = handle(coord, task("sleep", {"seconds": 30}))
    elapsed = time.monotonic() - started
    assert out["ok"] is False and out["permanent"] is False and out["cancelled"] is False
    assert out["error"] == f"timed out after {TASK_TIMEOUT:g} s"
    assert TASK_TIMEOUT - 0.5 < elapsed < TASK_TIMEOUT + 5


def test_cancel_stops_a_running_sleep(coord):
    import ray

    payload = task("sleep", {"seconds": 30})
    ref = coord.handle.remote(payload)
    time.sleep(0.5)  # let it start on the agent
    started = time.monotonic()
    assert ray.get(coord.cancel.remote(payload["id"]), timeout=10) is True
    out = ray.get(ref, timeout=10)
    assert time.monotonic() - started < 2
    assert out["ok"] is False and out["cancelled"] is True and out["error"] == "cancelled"
    assert ray.get(coord.cancel.remote(payload["id"]), timeout=10) is False  # no longer running


def test_batch_streams_outcomes_as_they_finish(coord):
    import ray

    slow = task("sleep", {"seconds": 1.5})
    fast = [task("echo", {"i": i}) for i in range(20)]
    unknown = task("nope")
    seen = []
    for ref in coord.handle_batch.remote([slow, *fast, unknown]):
        seen.append((ray.get(ref, timeout=30), time.monotonic()))
    ids = [out["id"] for out, _ in seen]
    assert sorted(ids) == sorted(t["id"] for t in [slow, *fast, unknown])
    assert ids[-1] == slow["id"]  # the slow one arrives last, after every fast one
    outcomes = {out["id"]: out for out, _ in seen}
    assert all(outcomes[t["id"]]["result"]["output"] == t["params"] for t in fast)
    assert outcomes[unknown["id"]]["permanent"] is True
    assert outcomes[slow["id"]]["ok"] is True
    # The fast outcomes were delivered well before the slow one finished.
    fast_arrival = max(at for out, at in seen if out["id"] != slow["id"])
    assert seen[-1][1] - fast_arrival > 1.0


def test_cancel_inside_a_batch(coord):
    import ray

    slow, fast = task("sleep", {"seconds": 30}), task("echo")
    stream = coord.handle_batch.remote([slow, fast])  # one agent: one batch call
    time.sleep(0.7)
    started = time.monotonic()
    assert ray.get(coord.cancel.remote(slow["id"]), timeout=10) is True
    outcomes = {out["id"]: out for out in (ray.get(ref, timeout=10) for ref in stream)}
    assert time.monotonic() - started < 2  # well before the 3 s task timeout
    assert outcomes[slow["id"]]["cancelled"] is True
    assert outcomes[fast["id"]]["ok"] is True


def test_chunks_carry_many_outcomes_per_message(coord):
    import ray

    tasks = [task("echo", {"i": i}) for i in range(100)]
    chunks = [ray.get(ref, timeout=30) for ref in coord.handle_chunks.remote(tasks)]
    assert sorted(out["id"] for chunk in chunks for out in chunk) == sorted(t["id"] for t in tasks)
    assert len(chunks) < 100


def test_a_killed_agent_is_replaced(coord):
    import ray

    from organism import actors

    namespace = f"{ray.get_runtime_context().namespace}-coordinator"
    name = actors.agent_actor_name("utility_organ_1_agent_0")
    ray.kill(ray.get_actor(name, namespace=namespace))
    deadline = time.monotonic() + 30
    outcomes = []
    while time.monotonic() < deadline:
        outcomes.append(handle(coord, task("echo", {"n": len(outcomes)})))
        if outcomes[-1]["ok"]:
            break
        time.sleep(0.2)
    assert outcomes[-1]["ok"] is True, outcomes
    assert all(not out["permanent"] for out in outcomes)  # failures on the way are retryable
    assert ray.get_actor(name, namespace=namespace) is not None


def test_status_summary_and_metrics(coord):
    handle(coord, task("echo"))
    status = handle(coord, task("get_organism_status"))
    assert status["ok"] is True, status
    organs = {organ["organ_id"]: organ for organ in status["result"]["output"]}
    assert set(organs) == {"cognitive_organ_1", "utility_organ_1"}
    assert organs["utility_organ_1"]["kind"] == "utility"
    agent = organs["utility_organ_1"]["agents"][0]
    assert agent["alive"] is True and agent["tasks_processed"] >= 1
    assert {"successes", "failures", "capability", "load", "last_task_at"} <= set(agent)

    summary = handle(coord, task("get_organism_summary"))["result"]["output"]
    assert summary["initialized"] is True
    assert summary["organ_count"] == 2 and summary["total_agent_count"] == 2
    assert {organ["kind"] for organ in summary["organs"]} == {"cognitive", "utility"}

    metrics = handle(coord, task("get_metrics"))["result"]["output"]
    assert metrics["tasks_processed"] >= 1 and metrics["agent_count"] == 2


def test_execute_on_organ_and_random_organ(coord):
    out = handle(
        coord,
        task(
            "execute_on_organ",
            {"organ_id": "cognitive_organ_1", "task": {"type": "echo", "params": {"a": 1}}},
        ),
    )
    assert out["ok"] is True, out
    assert out["result"]["output"]["output"] == {"a": 1}
    assert out["result"]["output"]["routing"]["organ_id"] == "cognitive_organ_1"

    out = handle(coord, task("execute_on_random_organ", {"task": {"type": "echo"}}))
    assert out["ok"] is True, out
    assert out["result"]["output"]["routing"]["organ_id"] in {
        "cognitive_organ_1",
        "utility_organ_1",
    }

    missing = handle(coord, task("execute_on_organ", {"organ_id": "nope", "task": {"type": "x"}}))
    assert missing["ok"] is False and missing["permanent"] is True
    assert "no handler registered for type 'x'" in missing["error"]
    bad_organ = handle(
        coord, task("execute_on_organ", {"organ_id": "nope", "task": {"type": "echo"}})
    )
    assert bad_organ["permanent"] is True and "no organ 'nope'" in bad_organ["error"]


def test_shutdown_then_initialize(coord):
    import ray

    from organism import actors

    namespace = f"{ray.get_runtime_context().namespace}-coordinator"
    assert ray.get_actor(actors.organ_actor_name("utility_organ_1"), namespace=namespace)
    down = handle(coord, task("shutdown_organism"))
    assert down["ok"] is True and down["result"]["output"]["organs_stopped"] == 2
    for name in (actors.organ_actor_name("utility_organ_1"), "seedcore_utility_organ_1_agent_0"):
        with pytest.raises(ValueError):
            ray.get_actor(name, namespace=namespace)
    refused = handle(coord, task("echo"))
    assert refused["ok"] is False and refused["permanent"] is False
    assert "shut down" in refused["error"]
    summary = handle(coord, task("get_organism_summary"))["result"]["output"]
    assert summary["initialized"] is False and summary["organ_count"] == 0

    up = handle(coord, task("initialize_organism"), timeout=120)
    assert up["ok"] is True, up
    assert up["result"]["output"]["total_agent_count"] == 2
    assert handle(coord, task("echo", {"back": True}))["result"]["output"] == {"back": True}


def test_a_restarted_coordinator_reuses_the_organism(coord):
    """Last in this module: it kills the module's Coordinator."""
    import ray

    from organism import actors

    namespace = f"{ray.get_runtime_context().namespace}-coordinator"
    agent_name = actors.agent_actor_name("utility_organ_1_agent_0")
    agent_before = ray.get_actor(agent_name, namespace=namespace)._actor_id
    ray.kill(coord)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            actors.get_coordinator(namespace)
        except actors.CoordinatorNotFound as exc:
            assert "rundispatcher" in str(exc)
            break
        time.sleep(0.1)
    fresh = actors.get_or_create_coordinator(
        namespace=namespace, organs=TEST_ORGANS, task_timeout=TASK_TIMEOUT
    )
    out = ray.get(fresh.handle.remote(task("echo", {"after": "restart"})), timeout=120)
    assert out["ok"] is True and out["result"]["output"] == {"after": "restart"}
    assert ray.get_actor(agent_name, namespace=namespace)._actor_id == agent_before
