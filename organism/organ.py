"""An organ: a group of agents of one kind. Plain Python; organism.ray wraps it in an actor.

The organ creates its agents through an injected factory (Ray actors in production, in-process
agents in unit tests) and reports their state. Tasks do not pass through the organ: the
OrganismManager sends them straight to the agents, which saves a hop per task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from organism.messages import Outcome, TaskPayload
from organism.routing import OrganSpec


class AgentClient(Protocol):
    """How the organ and the manager talk to an agent (see agent.LocalAgentClient and
    organism.ray.clients.RayAgentClient). A dead agent raises ActorUnavailable; a call a
    cancel stopped, CallCancelled (organism.messages). ``state()`` answers once the agent is
    placed (its actor created on a node with the resources it asks for); until then the
    call waits."""

    agent_id: str

    async def run(self, task: TaskPayload) -> Outcome: ...

    def run_batch(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]: ...

    async def cancel(self, task_id: str) -> bool: ...

    async def state(self) -> dict[str, Any]: ...

    async def kill(self) -> None: ...


AgentFactory = Callable[[OrganSpec, str], Awaitable[AgentClient]]

# How long start() waits for new agents of an organ with ``ray`` options (resources that may
# not be free) to be placed before it answers with them pending. An organ without them asks
# only for a sliver of CPU, and start() waits for its agents as it always did.
PLACEMENT_WAIT = 5.0


def agent_ids(spec: OrganSpec) -> list[str]:
    return [f"{spec.id}_agent_{index}" for index in range(spec.agents)]


class Organ:
    """The organ's agents, placed or pending. An agent is *placed* once its first ``state()``
    call answered (its actor runs on a node); until then it is *pending*: Ray waits for a node
    with the resources it asks for (and on KubeRay, that demand is what adds the node). A
    pending agent is never asked anything else, so nothing waits on it."""

    def __init__(
        self,
        spec: OrganSpec,
        agent_factory: AgentFactory,
        *,
        placement_wait: float = PLACEMENT_WAIT,
    ):
        self.spec = spec
        self._agent_factory = agent_factory
        self._placement_wait = placement_wait
        self._agents: list[AgentClient] = []
        self._placing: dict[str, asyncio.Future] = {}  # agent id -> its first state() call
        self._lock = asyncio.Lock()

    async def start(self) -> list[AgentClient]:
        """Create the organ's agents, replacing any that died, and return them; waits for new
        ones to be placed (up to the placement wait if the organ asks for resources:
        :meth:`placed` says which are)."""
        async with self._lock:
            if not self._agents:
                ids = agent_ids(self.spec)
                self._agents = list(await self._make(ids))
            else:
                for index, agent in enumerate(list(self._agents)):
                    if not await self._alive(agent):
                        self._agents[index] = (await self._make([agent.agent_id]))[0]
            await self._wait_placed(self._placement_wait if self.spec.ray else None)
            return list(self._agents)

    async def add_agents(self, count: int) -> list[AgentClient]:
        """Create ``count`` more agents (not waiting for their placement); returns them all."""
        async with self._lock:
            taken = {agent.agent_id for agent in self._agents}
            ids, index = [], 0
            while len(ids) < count:
                agent_id = f"{self.spec.id}_agent_{index}"
                if agent_id not in taken:
                    ids.append(agent_id)
                index += 1
            self._agents.extend(await self._make(ids))
            await self._wait_placed(0)
            return list(self._agents)

    async def remove_agents(self, ids: list[str]) -> list[AgentClient]:
        """Stop the agents ``ids`` (pending or placed); returns those left."""
        async with self._lock:
            going = [agent for agent in self._agents if agent.agent_id in ids]
            self._agents = [agent for agent in self._agents if agent.agent_id not in ids]
            for agent in going:
                watcher = self._placing.pop(agent.agent_id, None)
                if watcher is not None:
                    watcher.cancel()
            await asyncio.gather(*(agent.kill() for agent in going), return_exceptions=True)
            return list(self._agents)

    def placed(self, agent_id: str) -> bool:
        watcher = self._placing.get(agent_id)
        return (
            watcher is not None
            and watcher.done()
            and not watcher.cancelled()
            and (watcher.exception() is None)
        )

    def _pending(self, agent_id: str) -> bool:
        watcher = self._placing.get(agent_id)
        return watcher is not None and not watcher.done()

    async def _make(self, ids: list[str]) -> list[AgentClient]:
        make = self._agent_factory
        agents = list(await asyncio.gather(*(make(self.spec, agent_id) for agent_id in ids)))
        for agent in agents:
            self._placing[agent.agent_id] = asyncio.ensure_future(agent.state())
        return agents

    async def _wait_placed(self, timeout: float | None) -> None:
        waiting = [f for f in self._placing.values() if not f.done()]
        if waiting and (timeout is None or timeout > 0):
            await asyncio.wait(waiting, timeout=timeout)

    async def _alive(self, agent: AgentClient) -> bool:
        if self._pending(agent.agent_id):
            return True  # still waiting for a node: alive as far as anyone can tell
        try:
            await agent.state()
        except Exception:
            return False
        return True

    async def status(self) -> dict[str, Any]:
        """The organ, its size limits and resources, and each agent: ``placed`` (with its
        state, node included when the agent knows it) or pending placement."""
        agents_now = list(self._agents)
        placed = [agent for agent in agents_now if not self._pending(agent.agent_id)]
        states = await asyncio.gather(*(agent.state() for agent in placed), return_exceptions=True)
        by_id = dict(zip((agent.agent_id for agent in placed), states, strict=True))
        agents = []
        for agent in agents_now:
            if agent.agent_id not in by_id:
                agents.append({"agent_id": agent.agent_id, "alive": True, "placed": False})
                continue
            state = by_id[agent.agent_id]
            if isinstance(state, BaseException):
                agents.append(
                    {"agent_id": agent.agent_id, "alive": False, "placed": False,
                     "error": str(state)}
                )  # fmt: skip
            else:
                agents.append({**state, "alive": True, "placed": True})
        return {
            "organ_id": self.spec.id,
            "kind": self.spec.kind,
            "types": list(self.spec.types),
            "domains": list(self.spec.domains),
            "min_agents": self.spec.min_agents,
            "max_agents": self.spec.max_agents,
            "tasks_per_agent": self.spec.tasks_per_agent,
            "ray": dict(self.spec.ray),
            "agent_count": len(agents),
            "placed_count": sum(1 for agent in agents if agent["placed"]),
            "pending_count": sum(1 for agent in agents if agent["alive"] and not agent["placed"]),
            "agents": agents,
            "load": sum(agent.get("load", 0) for agent in agents),
        }

    async def shutdown(self) -> int:
        """Stop every agent; returns how many were stopped."""
        async with self._lock:
            agents, self._agents = self._agents, []
            watchers, self._placing = self._placing, {}
        for watcher in watchers.values():
            watcher.cancel()
        await asyncio.gather(*(agent.kill() for agent in agents), return_exceptions=True)
        return len(agents)
