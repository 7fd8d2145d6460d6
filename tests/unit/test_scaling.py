"""Organs that scale with their backlog, agents pending placement, and the types held back
while an organ has no placed agent: the real OrganismManager, Organ and Agent, in-process
agents whose placement the test controls (no Ray), and a clock the test moves."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from organism import handlers
from organism.agent import Agent, LocalAgentClient
from organism.handlers import handler
from organism.manager import OrganismManager, pending_reason
from organism.messages import OutcomeStatus, TaskPayload
from organism.organ import Organ
from organism.routing import OrganSpec

COOL_DOWN = 30.0
GPU_NODE = {"node_id": "gpu-node", "alive": True, "total": {"CPU": 4, "GPU": 1}}
HEAD = {"node_id": "head", "alive": True, "total": {"CPU": 2}, "free": {"CPU": 1.5}}


class Cluster:
    """Where agents can be placed: an agent asking for a GPU waits until ``gpus`` > 0."""

    def __init__(self, gpus: int = 0):
        self.gpus = gpus
        self.changed = asyncio.Event()
        self.created: list[str] = []
        self.nodes = [HEAD]

    def set_gpus(self, gpus: int) -> None:
        self.gpus = gpus
        gpu_node = {**GPU_NODE, "free": {"CPU": 4, "GPU": gpus}}
        self.nodes = [HEAD, gpu_node] if gpus else [HEAD]
        self.changed.set()

    async def view(self) -> list[dict]:
        return self.nodes


class PlacedClient(LocalAgentClient):
    """An in-process agent whose ``state()`` waits until the cluster can place it."""

    def __init__(self, agent: Agent, cluster: Cluster, needs_gpu: bool):
        super().__init__(agent)
        self.cluster, self.needs_gpu = cluster, needs_gpu

    async def state(self) -> dict:
        self._check_alive()
        while self.needs_gpu and self.cluster.gpus < 1:
            self.cluster.changed.clear()
            await self.cluster.changed.wait()
        state = await super().state()
        return {**state, "node_id": "gpu-node" if self.needs_gpu else "head"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(cluster: Cluster, organs: list[OrganSpec], clock: Clock) -> OrganismManager:
    async def agent_factory(spec: OrganSpec, agent_id: str) -> LocalAgentClient:
        cluster.created.append(agent_id)
        agent = Agent(agent_id, spec.id, default_timeout=5)
        return PlacedClient(agent, cluster, bool(spec.ray.get("num_gpus")))

    async def organ_factory(spec: OrganSpec) -> Organ:
        return Organ(spec, agent_factory, placement_wait=0.2)

    return OrganismManager(
        organs, organ_factory, cluster=cluster.view, scale_down_seconds=COOL_DOWN, clock=clock,
        placement_timeout=5.0,
    )  # fmt: skip


UTIL = OrganSpec("util", "utility", 1, types=("echo",))
GPU = OrganSpec(
    "gpu", "utility", 0, types=("embed_t",), min_agents=0, max_agents=4, ray={"num_gpus": 1}
)
BURST = OrganSpec("burst", "utility", 0, types=("burst_t",), min_agents=0, max_agents=4)


def task(type: str) -> TaskPayload:
    return TaskPayload(str(uuid.uuid4()), type, 1, {"x": 1})


@pytest.fixture
def registry():
    saved = dict(handlers._registry)
    for name in ("embed_t", "burst_t"):
        handler(name)(handlers.echo)
    yield
    handlers._registry.clear()
    handlers._registry.update(saved)


def organ(summary: dict, organ_id: str) -> dict:
    return next(o for o in summary["organs"] if o["organ_id"] == organ_id)


def test_a_burst_grows_the_organ_to_max_and_the_cool_down_shrinks_it_to_min(registry):
    async def scenario():
        cluster, clock = Cluster(), Clock()
        manager = make(cluster, [UTIL, BURST], clock)
        summary = await manager.tick({})
        assert organ(summary, "burst")["agent_count"] == 0  # min_agents 0: none at start
        assert summary["holds"]["burst_t"].startswith("organ burst has no agents yet")

        summary = await manager.tick({"burst_t": 10, "echo": 3})
        burst = organ(summary, "burst")
        assert (burst["agent_count"], burst["backlog"]) == (4, 10)  # capped by max_agents
        assert summary["scaling"][0] | {"at": None} == {
            "at": None, "organ_id": "burst", "from": 0, "to": 4,
            "reason": "backlog 10 > capacity 0 (1 per agent)",
        }  # fmt: skip
        await asyncio.sleep(0.05)  # let the new agents answer their first state()
        summary = await manager.tick({"burst_t": 10})
        assert organ(summary, "burst")["placed_count"] == 4
        assert "burst_t" not in summary["holds"]
        assert organ(summary, "util")["agent_count"] == 1  # a fixed organ never scales

        outcomes = [o async for chunk in manager.run_chunks([task("burst_t")] * 1) for o in chunk]
        assert outcomes[0].status is OutcomeStatus.OK

        summary = await manager.tick({})  # idle: the cool-down starts
        assert organ(summary, "burst")["agent_count"] == 4
        clock.now += COOL_DOWN - 1
        assert organ(await manager.tick({}), "burst")["agent_count"] == 4
        clock.now += 1
        summary = await manager.tick({})
        assert organ(summary, "burst")["agent_count"] == 0
        assert [(d["from"], d["to"]) for d in summary["scaling"]] == [(4, 0), (0, 4)]
        assert summary["scaling"][0]["reason"] == "backlog 0 needs 0 agents; 4 idle for 30 s"
        assert summary["holds"]["burst_t"]  # held again: no agent to take it

    asyncio.run(scenario())


def test_a_busy_agent_is_not_removed_by_the_cool_down(registry):
    async def scenario():
        cluster, clock = Cluster(), Clock()
        manager = make(cluster, [UTIL, BURST], clock)
        await manager.tick({"burst_t": 2})
        await asyncio.sleep(0.05)
        await manager.tick({"burst_t": 2})
        busy = manager._agents["burst"][0]
        manager._hold(busy, "running-task")
        clock.now += COOL_DOWN
        await manager.tick({})
        clock.now += COOL_DOWN
        summary = await manager.tick({"burst_t": 1})
        assert [a["agent_id"] for a in organ(summary, "burst")["agents"]] == [busy.agent_id]

    asyncio.run(scenario())


def test_pending_agents_are_never_routed_to_and_their_types_are_held(registry):
    async def scenario():
        cluster, clock = Cluster(gpus=0), Clock()
        manager = make(cluster, [UTIL, GPU], clock)
        summary = await manager.tick({"embed_t": 1, "echo": 1})
        gpu = organ(summary, "gpu")
        assert (gpu["agent_count"], gpu["placed_count"], gpu["pending_count"]) == (1, 0, 1)
        expected = "needs 1 GPU; the cluster has 0 of 0 free; 1 agent pending placement"
        assert summary["holds"] == {"embed_t": expected}
        assert gpu["pending_reason"] == expected
        assert "echo" not in summary["holds"]  # other organs keep flowing
        assert organ(summary, "util")["agents_per_node"] == {"head": 1}

        # A task claimed anyway (just before the hold was recorded) waits for a placed agent.
        waiting = asyncio.ensure_future(manager.run(task("embed_t")))
        echo = await manager.run(task("echo"))
        assert echo.status is OutcomeStatus.OK
        await asyncio.sleep(0.3)
        assert not waiting.done()

        cluster.set_gpus(1)  # a GPU node joins: the pending agent is placed
        outcome = await asyncio.wait_for(waiting, 5)
        assert outcome.status is OutcomeStatus.OK
        assert outcome.result["routing"]["organ_id"] == "gpu"
        summary = await manager.tick({"embed_t": 0})
        assert summary["holds"] == {}
        assert organ(summary, "gpu")["agents_per_node"] == {"gpu-node": 1}

    asyncio.run(scenario())


def test_a_task_waiting_for_placement_can_be_cancelled(registry):
    async def scenario():
        cluster, clock = Cluster(gpus=0), Clock()
        manager = make(cluster, [UTIL, GPU], clock)
        await manager.tick({"embed_t": 1})
        payload = task("embed_t")
        waiting = asyncio.ensure_future(manager.run(payload))
        await asyncio.sleep(0.1)
        assert await manager.cancel(payload.id)
        outcome = await asyncio.wait_for(waiting, 5)
        assert outcome.status is OutcomeStatus.CANCELLED

    asyncio.run(scenario())


def test_pending_reason_names_what_is_missing_against_what_is_free():
    spec = OrganSpec(
        "big", "utility", 1,
        ray={"num_gpus": 2, "memory": 8 * 2**30, "resources": {"model_x": 1}, "num_cpus": 1},
    )  # fmt: skip
    nodes = [
        {"node_id": "a", "total": {"CPU": 8, "GPU": 4, "memory": 16 * 2**30},
         "free": {"CPU": 8, "GPU": 1, "memory": 4 * 2**30}},
        {"node_id": "b", "total": {"CPU": 8, "GPU": 0, "memory": 16 * 2**30},
         "free": {"CPU": 8, "GPU": 0, "memory": 6 * 2**30}},
    ]  # fmt: skip
    assert pending_reason(spec, pending=2, agents=2, nodes=nodes) == (
        "needs 2 GPUs; the cluster has 1 of 4 free; "
        "needs 8.0 GiB of memory; the cluster has 10.0 GiB of 32.0 GiB free; "
        "needs 1 of resource 'model_x'; the cluster has 0 of 0 free; "
        "2 agents pending placement"
    )


def test_a_dead_agent_is_replaced_by_the_next_round_pending_without_resources(registry):
    async def scenario():
        cluster, clock = Cluster(gpus=1), Clock()
        manager = make(cluster, [UTIL, GPU], clock)
        await manager.tick({"embed_t": 1})
        await asyncio.sleep(0.05)
        summary = await manager.tick({"embed_t": 1})
        assert organ(summary, "gpu")["placed_count"] == 1
        cluster.set_gpus(0)  # the GPU node goes, and its agent with it
        await manager._agents["gpu"][0].kill()
        summary = await manager.tick({"embed_t": 1})  # seen dead, replaced: pending
        gpu = organ(summary, "gpu")
        assert (gpu["placed_count"], gpu["pending_count"]) == (0, 1)
        assert cluster.created.count("gpu_agent_0") == 2
        assert summary["holds"]["embed_t"].endswith("1 agent pending placement")

    asyncio.run(scenario())


def test_a_handler_bound_to_an_organ_runs_there_scales_it_and_is_held_by_it(registry):
    handler("bound_t", organ="gpu")(handlers.echo)
    gpu = OrganSpec("gpu", "utility", 0, min_agents=0, max_agents=2, ray={"num_gpus": 1})

    async def scenario():
        cluster, clock = Cluster(gpus=0), Clock()
        manager = make(cluster, [UTIL, gpu], clock)
        summary = await manager.tick({"bound_t": 1, "echo": 5})
        assert organ(summary, "gpu")["routed_types"] == ["bound_t"]
        assert organ(summary, "gpu")["agent_count"] == 1  # echo's backlog is not the GPU's
        assert set(summary["holds"]) == {"bound_t"}  # its agent is not placed yet
        cluster.set_gpus(1)
        await asyncio.sleep(0.05)
        assert (await manager.tick({"bound_t": 1}))["holds"] == {}
        outcome = await manager.run(task("bound_t"))
        assert outcome.result["routing"]["organ_id"] == "gpu"

    asyncio.run(scenario())


def test_an_organ_at_max_agents_with_every_agent_busy_says_so_for_its_types(registry):
    small = OrganSpec("small", "utility", 0, types=("burst_t",), min_agents=0, max_agents=2)

    async def scenario():
        cluster, clock = Cluster(), Clock()
        manager = make(cluster, [UTIL, small], clock)
        await manager.tick({"burst_t": 10})
        await asyncio.sleep(0.05)
        summary = await manager.tick({"burst_t": 10})
        agents = manager._agents["small"]
        assert len(agents) == 2 and summary["organ_full"] == {}  # at max, nothing running
        manager._hold(agents[0], "running-1")
        assert manager.organ_full() == {}  # one agent still idle
        manager._hold(agents[1], "running-2")
        full = (await manager.tick({"burst_t": 10}))["organ_full"]
        assert full == {
            "burst_t": "organ small is at its max_agents (2) with every agent busy "
            "(2 running, 1 per agent)"
        }
        # A fixed-size organ never says so: its agents take what comes.
        for agent in manager._agents["util"]:
            manager._hold(agent, f"echo-{agent.agent_id}")
        assert "echo" not in manager.organ_full()

    asyncio.run(scenario())
