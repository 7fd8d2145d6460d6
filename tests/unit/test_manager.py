"""The OrganismManager and Coordinator with in-process organs and agents (the real Organ and
Agent classes, no Ray): routing, load balancing, streaming, failures, cancel, control types."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

from organism.agent import Agent, LocalAgentClient
from organism.coordinator import Coordinator
from organism.handlers import handler
from organism.manager import OrganismManager
from organism.messages import Outcome, OutcomeStatus, TaskPayload
from organism.organ import Organ
from organism.routing import OrganSpec

ORGANS = [
    OrganSpec("cognitive_organ_1", "cognitive", 1, types=("test",)),
    OrganSpec("utility_organ_1", "utility", 2, types=("echo", "fail", "sleep")),
]


def make_manager(*, timeout: float = 5.0, organs=ORGANS) -> tuple[OrganismManager, list]:
    clients: list[LocalAgentClient] = []

    async def agent_factory(spec: OrganSpec, agent_id: str) -> LocalAgentClient:
        client = LocalAgentClient(Agent(agent_id, spec.id, default_timeout=timeout))
        clients.append(client)
        return client

    async def organ_factory(spec: OrganSpec) -> Organ:
        return Organ(spec, agent_factory)

    manager = OrganismManager(organs, organ_factory, drift_threshold=0.5, default_timeout=timeout)
    return manager, clients


def task(type: str, params: dict | None = None, *, attempt: int = 1, **extra) -> TaskPayload:
    return TaskPayload(str(uuid.uuid4()), type, attempt, params or {}, **extra)


def run(coro):
    return asyncio.run(coro)


async def collect(manager: OrganismManager, tasks: list[TaskPayload]) -> list[Outcome]:
    return [outcome async for chunk in manager.run_chunks(tasks) for outcome in chunk]


def test_echo_outcome_has_output_and_routing():
    manager, _ = make_manager()
    payload = task("echo", {"a": 1}, attempt=2)
    out = run(manager.run(payload))
    assert (out.task_id, out.attempt, out.status) == (payload.id, 2, OutcomeStatus.OK)
    assert out.result["output"] == {"a": 1}
    routing = out.result["routing"]
    assert routing["path"] == "fast" and routing["organ_id"] == "utility_organ_1"
    assert routing["agent_id"].startswith("utility_organ_1_agent_")
    assert (out.error, out.permanent, out.cancelled) == (None, False, False)
    assert manager.initialized is True  # created on the first task


def test_drift_escalates_to_the_cognitive_organ():
    manager, _ = make_manager()
    out = run(manager.run(task("echo", drift_score=0.7)))
    assert out.result["routing"]["path"] == "escalated"
    assert out.result["routing"]["organ_id"] == "cognitive_organ_1"


def test_unknown_type_fails_permanently_without_touching_an_agent():
    manager, clients = make_manager()
    out = run(manager.run(task("mystery")))
    assert out.status is OutcomeStatus.PERMANENT and out.result is None
    assert out.error == "no handler registered for type 'mystery'"
    assert clients == []  # the organism was not even started


def test_failures_carry_traceback_and_permanence():
    manager, _ = make_manager()
    plain, permanent = run(collect(manager, [task("fail"), task("fail", {"permanent": True})]))
    by_status = {plain.status: plain, permanent.status: permanent}
    assert "RuntimeError" in by_status[OutcomeStatus.ERROR].error
    assert "Traceback" in by_status[OutcomeStatus.ERROR].traceback
    assert by_status[OutcomeStatus.PERMANENT].error.startswith("PermanentError")


def test_batch_spreads_over_the_least_loaded_agents_and_streams_fast_ones_first():
    manager, clients = make_manager()
    slow = task("sleep", {"seconds": 0.3})
    fast = [task("echo", {"i": i}) for i in range(5)]

    async def scenario():
        arrivals = []
        async for chunk in manager.run_chunks([slow, *fast]):
            arrivals.extend(outcome.task_id for outcome in chunk)
        return arrivals

    arrivals = run(scenario())
    assert arrivals[-1] == slow.id and len(arrivals) == 6
    utility = [c.agent for c in clients if c.agent.organ_id == "utility_organ_1"]
    assert sorted(agent.tasks_processed for agent in utility) == [3, 3]


def test_chunks_group_outcomes_that_finish_together():
    manager, _ = make_manager()

    async def scenario():
        return [chunk async for chunk in manager.run_chunks([task("echo") for _ in range(50)])]

    chunks = run(scenario())
    assert sum(len(chunk) for chunk in chunks) == 50
    assert len(chunks) < 50


def test_handler_timeout_option_ends_the_attempt(registry):
    @handler("unit_stuck", timeout=0.1, max_attempts=7)
    def stuck(params, ctx):
        while not ctx.is_cancelled():  # a sync handler polls its context
            time.sleep(0.01)
        return "stopped"

    manager, _ = make_manager()
    started = time.monotonic()
    out = run(manager.run(task("unit_stuck")))
    assert time.monotonic() - started < 2
    assert out.status is OutcomeStatus.TIMED_OUT and out.error == "timed out after 0.1 s"
    assert out.max_attempts == 7


def test_default_timeout_applies_without_a_handler_option():
    manager, _ = make_manager(timeout=0.2)
    out = run(manager.run(task("sleep", {"seconds": 10})))
    assert out.error == "timed out after 0.2 s"


def test_cancel_stops_a_running_task_promptly():
    manager, _ = make_manager()
    payload = task("sleep", {"seconds": 30})

    async def scenario():
        job = asyncio.ensure_future(manager.run(payload))
        await asyncio.sleep(0.1)
        assert await manager.cancel(payload.id) is True
        out = await asyncio.wait_for(job, 2)
        assert await manager.cancel(payload.id) is False
        return out

    out = run(scenario())
    assert out.status is OutcomeStatus.CANCELLED and out.error == "cancelled"


def test_control_types_status_summary_metrics():
    manager, _ = make_manager()
    run(manager.run(task("echo")))
    status = run(manager.run(task("get_organism_status")))
    assert status.ok is True
    assert status.result["routing"] == {
        "path": "fast",
        "organ_id": None,
        "agent_id": None,
        "duration_ms": status.result["routing"]["duration_ms"],
    }
    organs = {organ["organ_id"]: organ for organ in status.output}
    assert organs["utility_organ_1"]["agent_count"] == 2
    agent_states = organs["utility_organ_1"]["agents"]
    assert sum(agent["tasks_processed"] for agent in agent_states) == 1
    assert {"successes", "failures", "capability", "load", "last_task_at"} <= set(agent_states[0])

    summary = run(manager.run(task("get_organism_summary"))).output
    assert summary["initialized"] is True
    assert (summary["organ_count"], summary["total_agent_count"]) == (2, 3)
    metrics = run(manager.run(task("get_metrics"))).output
    assert metrics["tasks_processed"] == 1 and metrics["paths"] == {"fast": 1}


def test_capability_is_a_moving_average_of_success():
    agent = Agent("a", "o")
    run(agent.run(task("fail")))
    assert agent.state()["capability"] == pytest.approx(0.9)
    run(agent.run(task("echo")))
    state = agent.state()
    assert state["capability"] == pytest.approx(0.91)
    assert (state["tasks_processed"], state["successes"], state["failures"]) == (2, 1, 1)
    assert state["load"] == 0 and state["last_task_at"] is not None


def test_execute_on_organ_and_random_organ():
    manager, _ = make_manager()
    inner = {"type": "echo", "params": {"z": 1}}
    out = run(
        manager.run(task("execute_on_organ", {"organ_id": "cognitive_organ_1", "task": inner}))
    )
    assert out.ok is True
    assert out.output["output"] == {"z": 1}
    assert out.output["routing"]["organ_id"] == "cognitive_organ_1"
    out = run(manager.run(task("execute_on_random_organ", {"task": inner})))
    assert out.output["output"] == {"z": 1}

    for params, message in [
        ({"organ_id": "nope", "task": inner}, "no organ 'nope'"),
        ({"task": inner}, "params.organ_id"),
        ({"organ_id": "utility_organ_1"}, "params.task"),
        ({"organ_id": "utility_organ_1", "task": {"type": "get_metrics"}}, "control type"),
    ]:
        bad = run(manager.run(task("execute_on_organ", params)))
        assert bad.status is OutcomeStatus.PERMANENT and message in bad.error
    failed = run(manager.run(task("execute_on_random_organ", {"task": {"type": "fail"}})))
    assert failed.status is OutcomeStatus.ERROR


def test_shutdown_stops_agents_and_initialize_brings_them_back():
    manager, clients = make_manager()
    run(manager.initialize())
    down = run(manager.run(task("shutdown_organism")))
    assert down.output == {"shutdown": True, "organs_stopped": 2, "agents_stopped": 3}
    assert all(client.alive is False for client in clients)
    refused = run(manager.run(task("echo")))
    assert refused.status is OutcomeStatus.UNAVAILABLE and "shut down" in refused.error

    up = run(manager.run(task("initialize_organism")))
    assert up.ok is True and up.output["total_agent_count"] == 3
    assert len(clients) == 6  # fresh agents
    assert run(manager.run(task("echo", {"ok": 1}))).output == {"ok": 1}


def test_a_dead_agent_fails_its_tasks_as_system_failures():
    manager, clients = make_manager(organs=[OrganSpec("solo", "utility", 1, types=("echo",))])
    run(manager.initialize())
    run(clients[0].kill())
    results = run(collect(manager, [task("echo"), task("echo")]))
    assert [r.status for r in results] == [OutcomeStatus.SYSTEM] * 2
    assert [r.kind for r in results] == ["actor_died"] * 2
    assert all("agent solo_agent_0 failed: ActorUnavailable" in r.error for r in results)
    # Each says where it was lost: the dead agent's placement.
    assert all(r.run.placement == clients[0].placement for r in results)
    assert all(r.run.log.startswith("[lost: actor_died]") for r in results)
    assert manager._load == {} and manager._in_flight == {}  # bookkeeping released
    # The next task finds the dead agent replaced by a new one.
    out = run(manager.run(task("echo", {"again": True})))
    assert out.ok is True and out.result["routing"]["agent_id"] == "solo_agent_0"
    assert len(clients) == 2 and clients[1].alive


def test_coordinator_turns_a_crash_into_outcomes():
    class Broken:
        async def run_chunks(self, tasks):
            yield [Outcome.success(tasks[0], "done", None)]
            raise RuntimeError("bug")

    coordinator = Coordinator(Broken())
    tasks = [task("echo"), task("echo")]

    async def scenario():
        return [chunk async for chunk in coordinator.run_chunks(tasks)]

    [first], [second] = run(scenario())
    assert first.ok is True
    assert second.task_id == tasks[1].id and second.status is OutcomeStatus.CRASHED
    assert second.error == "coordinator error: RuntimeError: bug"
    assert coordinator.ping() == "pong"


def test_sync_handlers_run_side_by_side_in_threads(registry):
    @handler("unit_blocking")
    def blocking(params, ctx):
        time.sleep(0.3)
        return params["i"]

    manager, _ = make_manager(organs=[OrganSpec("solo", "utility", 1, types=("unit_blocking",))])
    run(manager.initialize())
    started = time.monotonic()
    results = run(collect(manager, [task("unit_blocking", {"i": i}) for i in range(20)]))
    assert sorted(r.output for r in results) == list(range(20))
    # 20 × 0.3 s on one agent: together, not a few at a time (the default pool has cores + 4).
    assert time.monotonic() - started < 0.9


def test_cancel_stops_a_control_task_running_on_the_coordinator(registry):
    @handler("unit_control_wait", control=True)
    async def wait(params, ctx):
        await asyncio.sleep(30)

    manager, _ = make_manager()
    payload = task("unit_control_wait")

    async def scenario():
        job = asyncio.ensure_future(manager.run(payload))
        await asyncio.sleep(0.05)
        assert await manager.cancel(payload.id) is True
        return await asyncio.wait_for(job, 2)

    out = run(scenario())
    assert out.status is OutcomeStatus.CANCELLED and out.error == "cancelled"
    assert manager._controls == {} and manager._cancelled == set()


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ({"at": datetime.now(UTC)}, "Object of type datetime is not JSON serializable"),
        ({"score": float("nan")}, "NaN or Infinity is not JSON"),
        ([float("inf")], "NaN or Infinity is not JSON"),
        ({"text": "a\x00b"}, "a string holds NUL (\\u0000)"),
        ({"ke\x00y": 1}, "a string holds NUL (\\u0000)"),
        ("\ud800", "a string holds an unpaired surrogate"),
    ],
)
def test_a_result_json_cannot_hold_fails_permanently_naming_the_problem(registry, output, problem):
    @handler("unit_unstorable", max_attempts=4)
    def unstorable(params, ctx):
        return output

    manager, _ = make_manager()
    out = run(manager.run(task("unit_unstorable")))
    # Before the fix this was OK, and the write of its whole batch failed in the database.
    assert out.status is OutcomeStatus.PERMANENT and out.result is None
    assert out.error.startswith("the handler's result cannot be stored as JSON: ")
    assert problem in out.error
    assert out.max_attempts == 4


def test_outcomes_finishing_a_little_apart_share_chunks_but_the_first_goes_at_once():
    agent = Agent("pace_agent", "utility_organ_1")
    # 40 sleeps ending 0.5 ms apart over 20 ms: paced at one chunk per 2 ms, not one each.
    tasks = [task("sleep", {"seconds": 0.001 + i * 0.0005}) for i in range(40)]

    async def scenario():
        loop = asyncio.get_running_loop()
        began, chunks = loop.time(), []
        async for chunk in agent.run_batch(tasks):
            chunks.append((loop.time() - began, len(chunk)))
        return chunks

    chunks = run(scenario())
    assert sum(size for _, size in chunks) == 40
    assert len(chunks) <= 15
    first_at, first_size = chunks[0]
    assert first_size >= 1 and first_at < 0.1


def test_a_handler_that_ignores_its_timeout_is_answered_at_the_timeout(registry):
    @handler("unit_deaf", timeout=0.1)
    async def deaf(params, ctx):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(1)  # keeps running after the cancel
        return "late"

    agent = Agent("deaf_agent", "utility_organ_1")

    async def scenario():
        began = time.monotonic()
        out = await agent.run(task("unit_deaf"))
        return out, time.monotonic() - began

    out, took = run(scenario())
    assert out.status is OutcomeStatus.TIMED_OUT
    assert took < 0.9


def test_an_agent_killed_under_a_running_task_loses_it_to_the_system():
    manager, clients = make_manager(organs=[OrganSpec("solo", "utility", 1, types=("sleep",))])
    run(manager.initialize())

    async def scenario():
        running = asyncio.ensure_future(manager.run(task("sleep", {"seconds": 30})))
        while not clients[0].agent.load:
            await asyncio.sleep(0.01)
        await clients[0].kill()
        return await running

    lost = run(scenario())
    assert (lost.status, lost.kind) == (OutcomeStatus.SYSTEM, "actor_died")
    assert lost.system is True and lost.ok is False
    assert lost.run.placement == clients[0].placement
    assert lost.run.started_at <= lost.run.finished_at
    assert lost.run_record()[-2] == "system"
    # An exception or a timeout in the handler stays an ordinary failure.
    failed = run(manager.run(task("sleep", {"seconds": -1})))
    assert failed.status is OutcomeStatus.PERMANENT and failed.kind is None
    assert failed.run_record()[-2] == "error"


def test_every_outcome_from_an_agent_says_where_and_when_it_ran():
    manager, clients = make_manager()
    before = time.time()
    out = run(manager.run(task("echo", {"a": 1}, attempt=3)))
    agent = next(c for c in clients if c.agent_id == out.routing.agent_id)
    # Without Ray, only the pid is known.
    assert out.run.placement == (None, None, agent.placement.pid, None, "utility_organ_1")
    assert before <= out.run.started_at <= out.run.finished_at <= time.time()
    assert out.run.log is None  # the handler logged nothing
    assert out.run_record()[-2:] == ("completed", None)


def test_an_agent_ray_lost_is_not_picked_again_while_it_cannot_be_replaced():
    """Until Ray declares an agent dead, its organ cannot replace it (its name still hands
    out the dying actor): tasks then go to the organ's other agents, not to it again."""
    clients: list[LocalAgentClient] = []
    replaceable = True

    async def agent_factory(spec: OrganSpec, agent_id: str) -> LocalAgentClient:
        if not replaceable:
            raise RuntimeError(f"{agent_id} still taken")
        client = LocalAgentClient(Agent(agent_id, spec.id, default_timeout=5.0))
        clients.append(client)
        return client

    async def organ_factory(spec: OrganSpec) -> Organ:
        return Organ(spec, agent_factory)

    spec = OrganSpec("pair", "utility", 2, types=("echo",))
    manager = OrganismManager([spec], organ_factory, default_timeout=5.0)
    run(manager.initialize())
    dead, alive = clients
    run(dead.kill())
    replaceable = False
    outcomes = []
    for _ in range(12):
        outcomes.append(run(manager.run(task("echo"))))
        if outcomes[-1].system:
            break
    assert outcomes[-1].system and outcomes[-1].run.placement == dead.placement
    # The heal that follows cannot replace it (UNAVAILABLE, as before); after that, every
    # task runs on the live agent rather than being lost again on the dead one.
    after = [run(manager.run(task("echo"))) for _ in range(6)]
    assert not any(out.system for out in after)
    assert [out.routing.agent_id for out in after if out.ok] == ["pair_agent_1"] * sum(
        out.ok for out in after
    )
    assert sum(out.ok for out in after) >= 5
