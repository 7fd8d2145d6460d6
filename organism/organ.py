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
    cancel stopped, CallCancelled (organism.messages)."""

    agent_id: str

    async def run(self, task: TaskPayload) -> Outcome: ...

    def run_batch(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]: ...

    async def cancel(self, task_id: str) -> bool: ...

    async def state(self) -> dict[str, Any]: ...

    async def kill(self) -> None: ...


AgentFactory = Callable[[OrganSpec, str], Awaitable[AgentClient]]


def agent_ids(spec: OrganSpec) -> list[str]:
    return [f"{spec.id}_agent_{index}" for index in range(spec.agents)]


class Organ:
    def __init__(self, spec: OrganSpec, agent_factory: AgentFactory):
        self.spec = spec
        self._agent_factory = agent_factory
        self._agents: list[AgentClient] = []
        self._lock = asyncio.Lock()

    async def start(self) -> list[AgentClient]:
        """Create the organ's agents, replacing any that died, and return them."""
        async with self._lock:
            make = self._agent_factory
            if not self._agents:
                ids = agent_ids(self.spec)
                self._agents = list(await asyncio.gather(*(make(self.spec, i) for i in ids)))
                return list(self._agents)
            states = await asyncio.gather(
                *(agent.state() for agent in self._agents), return_exceptions=True
            )
            for index, state in enumerate(states):
                if isinstance(state, Exception):
                    self._agents[index] = await make(self.spec, self._agents[index].agent_id)
            return list(self._agents)

    async def status(self) -> dict[str, Any]:
        states = await asyncio.gather(
            *(agent.state() for agent in self._agents), return_exceptions=True
        )
        agents = []
        for agent, state in zip(self._agents, states, strict=True):
            if isinstance(state, BaseException):
                agents.append({"agent_id": agent.agent_id, "alive": False, "error": str(state)})
            else:
                agents.append({**state, "alive": True})
        return {
            "organ_id": self.spec.id,
            "kind": self.spec.kind,
            "types": list(self.spec.types),
            "domains": list(self.spec.domains),
            "agent_count": len(agents),
            "agents": agents,
            "load": sum(agent.get("load", 0) for agent in agents),
        }

    async def shutdown(self) -> int:
        """Stop every agent; returns how many were stopped."""
        async with self._lock:
            agents, self._agents = self._agents, []
        await asyncio.gather(*(agent.kill() for agent in agents), return_exceptions=True)
        return len(agents)
