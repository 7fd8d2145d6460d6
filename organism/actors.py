"""The Ray shells: thin ``ray.remote`` wrappers over Coordinator, Organ and Agent.

Nothing here touches Ray at import: the remote classes are built on first use. Actors live in
SeedCore's namespace under stable names, detached, so a restarted Coordinator reuses (or
replaces) the organs and agents of its predecessor:

    seedcore_coordinator
    seedcore_organ_<organ id>
    seedcore_<agent id>            (agent id: <organ id>_agent_<i>)

Each actor process sets Django up from its runtime environment (DJANGO_SETTINGS_MODULE,
DATABASE_URL), as the processes ``rundispatcher`` starts do.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

from organism.routing import OrganSpec, parse_organs

COORDINATOR_NAME = "seedcore_coordinator"
COORDINATOR_MAX_CONCURRENCY = 4000
ORGAN_NUM_CPUS = 0.05
AGENT_NUM_CPUS = 0.05
AGENT_MAX_CONCURRENCY = 2000
# Organs and agents spread over the Ray nodes, so adding nodes adds capacity and losing one
# loses only its share of the organism (the manager heals the rest). Ray's default packs
# small actors onto one node.
ORGANISM_SCHEDULING = "SPREAD"


class CoordinatorNotFound(Exception):
    """No Coordinator in the namespace; the message says how to start one."""


def coordinator_name() -> str:
    return COORDINATOR_NAME


def organ_actor_name(organ_id: str) -> str:
    return f"seedcore_organ_{organ_id}"


def agent_actor_name(agent_id: str) -> str:
    return f"seedcore_{agent_id}"


def get_coordinator(namespace: str | None = None) -> Any:
    """The running Coordinator's handle; CoordinatorNotFound if there is none."""
    import ray
    from django.conf import settings

    namespace = namespace or settings.RAY_NAMESPACE
    try:
        return ray.get_actor(COORDINATOR_NAME, namespace=namespace)
    except ValueError:
        raise CoordinatorNotFound(
            f"no Coordinator ({COORDINATOR_NAME}) in Ray namespace {namespace!r}; "
            "start it with `python manage.py rundispatcher`"
        ) from None


def get_or_create_coordinator(
    *,
    namespace: str | None = None,
    organs: list[dict[str, Any]] | None = None,
    task_timeout: float | None = None,
) -> Any:
    """The Coordinator's handle, creating the detached actor if it is absent.

    Two creators racing get the same actor (``get_if_exists``). ``organs`` (plain dicts as in
    SEEDCORE_ORGANS) and ``task_timeout`` override the settings for a newly created
    Coordinator only.
    """
    from django.conf import settings

    namespace = namespace or settings.RAY_NAMESPACE
    try:
        return get_coordinator(namespace)
    except CoordinatorNotFound:
        pass
    if organs is not None:
        parse_organs(organs)  # a bad spec fails here, in the caller, not inside the actor
    return (
        coordinator_actor_class()
        .options(
            name=COORDINATOR_NAME,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0.1,
            max_concurrency=COORDINATOR_MAX_CONCURRENCY,
        )
        .remote(organs, namespace, task_timeout)
    )


def ensure_django() -> None:
    """Set Django up in an actor process (once)."""
    from django.apps import apps

    if apps.ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedcore_site.settings")
    import django

    django.setup()


# ---------------------------------------------------------------------------------------------
# Clients: how the Coordinator's manager talks to organ and agent actors


class RayAgentClient:
    """An agent actor, as the manager sees it. Picklable (the organ actor returns these)."""

    def __init__(self, agent_id: str, handle: Any, namespace: str):
        self.agent_id = agent_id
        self.handle = handle
        self.namespace = namespace
        self._refs: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "handle": self.handle, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["agent_id"], state["handle"], state["namespace"])

    async def run(self, task: dict[str, Any]) -> dict[str, Any]:
        import ray

        task_id = str(task.get("id"))
        ref = self.handle.run.remote(task)
        self._refs[task_id] = ref
        try:
            return await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        finally:
            self._refs.pop(task_id, None)

    async def run_batch(self, tasks: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
        async for ref in self.handle.run_batch.options(num_returns="streaming").remote(tasks):
            yield await ref

    async def cancel(self, task_id: str) -> bool:
        import ray

        found = await self.handle.cancel.remote(task_id)
        ref = self._refs.get(task_id)
        if not found and ref is not None:  # sent but not started yet: cancel the call itself
            ray.cancel(ref)
            found = True
        return bool(found)

    async def state(self) -> dict[str, Any]:
        return await self.handle.state.remote()

    async def kill(self) -> None:
        name = agent_actor_name(self.agent_id)
        await asyncio.to_thread(_kill_and_wait, self.handle, name, self.namespace)


class RayOrganClient:
    def __init__(self, spec: OrganSpec, handle: Any, namespace: str):
        self.spec = spec
        self.handle = handle
        self.namespace = namespace

    async def start(self) -> list[RayAgentClient]:
        return await self.handle.start.remote()

    async def status(self) -> dict[str, Any]:
        return await self.handle.status.remote()

    async def shutdown(self) -> int:
        try:
            stopped = await self.handle.shutdown.remote()
        except Exception:  # the organ actor is already gone
            stopped = 0
        name = organ_actor_name(self.spec.id)
        await asyncio.to_thread(_kill_and_wait, self.handle, name, self.namespace)
        return stopped


def _kill_and_wait(handle: Any, name: str, namespace: str, timeout: float = 10.0) -> None:
    """Kill an actor and wait until its name is free, so a re-initialise makes a new one
    rather than getting the dying one back through ``get_if_exists``."""
    import ray

    ray.kill(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.05)


async def ray_organ_factory(
    spec: OrganSpec, *, namespace: str, default_timeout: float
) -> RayOrganClient:
    def create() -> Any:
        return (
            organ_actor_class()
            .options(
                name=organ_actor_name(spec.id),
                namespace=namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=ORGAN_NUM_CPUS,
                scheduling_strategy=ORGANISM_SCHEDULING,
            )
            .remote(spec.as_dict(), namespace, default_timeout)
        )

    handle = await asyncio.to_thread(create)
    return RayOrganClient(spec, handle, namespace)


async def ray_agent_factory(
    spec: OrganSpec, agent_id: str, *, namespace: str, default_timeout: float
) -> RayAgentClient:
    def create() -> Any:
        return (
            agent_actor_class()
            .options(
                name=agent_actor_name(agent_id),
                namespace=namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=AGENT_NUM_CPUS,
                scheduling_strategy=ORGANISM_SCHEDULING,
                max_concurrency=AGENT_MAX_CONCURRENCY,
            )
            .remote(agent_id, spec.id, default_timeout)
        )

    handle = await asyncio.to_thread(create)
    await handle.state.remote()  # wait until it is up, so the first task is not slowed
    return RayAgentClient(agent_id, handle, namespace)


# ---------------------------------------------------------------------------------------------
# The remote classes, built on first use


@cache
def coordinator_actor_class() -> Any:
    import ray

    @ray.remote
    class CoordinatorActor:
        def __init__(
            self,
            organs: list[dict[str, Any]] | None,
            namespace: str,
            task_timeout: float | None = None,
        ):
            ensure_django()
            from django.conf import settings

            from organism.coordinator import Coordinator
            from organism.handlers import autodiscover
            from organism.manager import OrganismManager

            autodiscover()
            specs = parse_organs(organs) if organs else list(settings.SEEDCORE_ORGANS)
            timeout = task_timeout or settings.SEEDCORE_TASK_TIMEOUT

            async def factory(spec: OrganSpec) -> RayOrganClient:
                return await ray_organ_factory(spec, namespace=namespace, default_timeout=timeout)

            manager = OrganismManager(
                specs,
                factory,
                drift_threshold=settings.SEEDCORE_DRIFT_THRESHOLD,
                default_timeout=timeout,
            )
            self.coordinator = Coordinator(manager)

        async def handle(self, task: dict[str, Any]) -> dict[str, Any]:
            return await self.coordinator.handle(task)

        async def handle_batch(self, tasks: list[dict[str, Any]]):
            async for result in self.coordinator.handle_batch(tasks):
                yield result

        async def handle_chunks(self, tasks: list[dict[str, Any]]):
            async for chunk in self.coordinator.handle_chunks(tasks):
                yield chunk

        async def cancel(self, task_id: str) -> bool:
            return await self.coordinator.cancel(task_id)

        async def initialize(self) -> bool:
            """Bring the organism up now rather than on the first task."""
            await self.coordinator.manager.initialize()
            return True

        async def ping(self) -> str:
            return self.coordinator.ping()

    return CoordinatorActor


@cache
def organ_actor_class() -> Any:
    import ray

    @ray.remote
    class OrganActor:
        def __init__(self, spec: dict[str, Any], namespace: str, default_timeout: float):
            from organism.organ import Organ

            organ_spec = parse_organs([spec])[0]

            async def factory(spec: OrganSpec, agent_id: str) -> RayAgentClient:
                return await ray_agent_factory(
                    spec, agent_id, namespace=namespace, default_timeout=default_timeout
                )

            self.organ = Organ(organ_spec, factory)

        async def start(self) -> list[RayAgentClient]:
            return await self.organ.start()

        async def status(self) -> dict[str, Any]:
            return await self.organ.status()

        async def shutdown(self) -> int:
            return await self.organ.shutdown()

        async def ping(self) -> str:
            return "pong"

    return OrganActor


@cache
def agent_actor_class() -> Any:
    import ray

    @ray.remote
    class AgentActor:
        def __init__(self, agent_id: str, organ_id: str, default_timeout: float):
            ensure_django()
            from organism.agent import Agent
            from organism.handlers import autodiscover

            autodiscover()
            self.agent = Agent(agent_id, organ_id, default_timeout=default_timeout)

        async def run(self, task: dict[str, Any]) -> dict[str, Any]:
            return await self.agent.run(task)

        async def run_batch(self, tasks: list[dict[str, Any]]):
            async for chunk in self.agent.run_batch(tasks):
                yield chunk

        async def cancel(self, task_id: str) -> bool:
            return self.agent.cancel(task_id)

        async def state(self) -> dict[str, Any]:
            return self.agent.state()

        async def ping(self) -> str:
            return "pong"

    return AgentActor
