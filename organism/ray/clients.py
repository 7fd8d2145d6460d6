"""How the plain classes call actors: async clients over actor handles.

The Coordinator's manager talks to organs and agents through :class:`RayOrganClient` and
:class:`RayAgentClient`; a dispatcher talks to the Coordinator through
:class:`RayCoordinatorClient`. Each packs the messages it sends and unpacks those it gets
(:mod:`organism.messages`), and turns Ray's failures into SeedCore's (:mod:`.errors`), so
its callers see only the plain types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import ray

from organism.messages import (
    CoordinatorUnavailable,
    Outcome,
    Placement,
    TaskPayload,
    pack_tasks,
    unpack_outcomes,
)
from organism.ray.errors import translated
from organism.routing import OrganSpec


class NamedActor:
    """A detached actor known by name: its handle, and how to end it for good."""

    def __init__(self, handle: Any, name: str, namespace: str):
        self.handle = handle
        self.name = name
        self.namespace = namespace

    async def kill(self) -> None:
        await asyncio.to_thread(kill_and_wait, self.handle, self.name, self.namespace)


class RayAgentClient(NamedActor):
    """An agent actor, as the manager sees it. Picklable: the organ actor returns these.
    ``placement`` is where the actor runs, as it said when it started: what a SYSTEM failure
    of a call to it records."""

    def __init__(
        self,
        agent_id: str,
        handle: Any,
        name: str,
        namespace: str,
        placement: Placement | None = None,
    ):
        super().__init__(handle, name, namespace)
        self.agent_id = agent_id
        self.placement = placement
        self._refs: dict[str, Any] = {}  # task id -> the call running it

    def __getstate__(self) -> dict[str, Any]:
        keys = ("agent_id", "handle", "name", "namespace", "placement")
        return {key: getattr(self, key) for key in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    async def run(self, task: TaskPayload) -> Outcome:
        ref = self.handle.run.remote(pack_tasks([task]))
        self._refs[task.id] = ref
        try:
            with translated(f"agent {self.agent_id}"):
                return unpack_outcomes(await ref)[0]
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        finally:
            self._refs.pop(task.id, None)

    async def run_batch(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]:
        with translated(f"agent {self.agent_id}"):
            stream = self.handle.run_batch.options(num_returns="streaming")
            async for ref in stream.remote(pack_tasks(tasks)):
                yield unpack_outcomes(await ref)

    async def cancel(self, task_id: str) -> bool:
        with translated(f"agent {self.agent_id}"):
            found = await self.handle.cancel.remote(task_id)
        ref = self._refs.get(task_id)
        if not found and ref is not None:  # sent but not started yet: cancel the call itself
            ray.cancel(ref)
            found = True
        return bool(found)

    async def state(self) -> dict[str, Any]:
        with translated(f"agent {self.agent_id}"):
            return await self.handle.state.remote()


class RayOrganClient(NamedActor):
    """An organ actor, as the manager sees it."""

    def __init__(self, spec: OrganSpec, handle: Any, name: str, namespace: str):
        super().__init__(handle, name, namespace)
        self.spec = spec

    async def start(self) -> list[RayAgentClient]:
        with translated(f"organ {self.spec.id}"):
            return await self.handle.start.remote()

    async def add_agents(self, count: int) -> list[RayAgentClient]:
        with translated(f"organ {self.spec.id}"):
            return await self.handle.add_agents.remote(count)

    async def remove_agents(self, ids: list[str]) -> list[RayAgentClient]:
        with translated(f"organ {self.spec.id}"):
            return await self.handle.remove_agents.remote(ids)

    async def status(self) -> dict[str, Any]:
        with translated(f"organ {self.spec.id}"):
            return await self.handle.status.remote()

    async def shutdown(self) -> int:
        try:
            stopped = await self.handle.shutdown.remote()
        except Exception:  # the organ actor is already gone
            stopped = 0
        await self.kill()
        return stopped


class RayCoordinatorClient:
    """The Coordinator actor, as a dispatcher sees it: run a batch, cancel one task."""

    def __init__(self, handle: Any):
        self.handle = handle

    def run_chunks(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]:
        """Send ``tasks`` now (from any thread: the dispatcher sends from its claim thread);
        iterate the answer on the event loop for their outcomes, in chunks.

        Chunks, not one Ray object per outcome: a message per task caps throughput near
        1,000 tasks/s; outcomes finished together travel together."""
        with translated("the Coordinator", CoordinatorUnavailable):
            refs = self.handle.run_chunks.remote(pack_tasks(tasks))
        return self._chunks(refs)

    async def _chunks(self, refs: Any) -> AsyncIterator[list[Outcome]]:
        with translated("the Coordinator", CoordinatorUnavailable):
            async for ref in refs:
                yield unpack_outcomes(await ref)

    async def cancel(self, task_id: str) -> bool:
        with translated("the Coordinator", CoordinatorUnavailable):
            return bool(await self.handle.cancel.remote(task_id))


def kill_and_wait(handle: Any, name: str, namespace: str, timeout: float = 10.0) -> None:
    """Kill an actor and wait until its name is free, so a re-initialise makes a new one
    rather than getting the dying one back through ``get_if_exists``."""
    ray.kill(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.05)
