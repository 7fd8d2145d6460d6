"""The actor shells over the plain classes, and how each actor is created and found.

Each shell is a plain class, made a Ray actor class only when first created (:func:`_remote`),
whose methods unpack what arrives, call the plain object and pack what goes back
(:mod:`organism.messages`). Actors live in SeedCore's namespace under stable names, detached,
so a restarted Coordinator reuses (or replaces) its predecessor's organs and agents:

    seedcore_coordinator          CoordinatorActor  over organism.coordinator.Coordinator
    seedcore_organ_<organ id>     OrganActor        over organism.organ.Organ
    seedcore_<agent id>           AgentActor        over organism.agent.Agent
                                  (agent id: <organ id>_agent_<i>; created with
                                  the organ's ``ray`` options, e.g. num_gpus)
    seedcore_dispatcher_<i>       DispatcherActor   over organism.dispatcher.Dispatcher

Each actor that uses Django sets it up from its environment (DJANGO_SETTINGS_MODULE from the
runtime_env, DATABASE_URL and SECRET_KEY from its node; see
:func:`organism.ray.connect.actor_env_vars`) with :func:`ensure_django`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from functools import cache
from typing import Any

import ray

from organism.agent import Agent
from organism.coordinator import Coordinator
from organism.dispatcher import Dispatcher, DispatcherConfig, QueueStore
from organism.manager import OrganismManager
from organism.messages import CoordinatorUnavailable, Placement, pack_outcomes, unpack_tasks
from organism.organ import Organ
from organism.ray.clients import RayAgentClient, RayCoordinatorClient, RayOrganClient
from organism.routing import OrganSpec, configured_organs, parse_organs
from organism.waker import NotifyWaker

logger = logging.getLogger("seedcore.dispatcher")

COORDINATOR_NAME = "seedcore_coordinator"
DISPATCHER_PREFIX = "seedcore_dispatcher_"
COORDINATOR_MAX_CONCURRENCY = 4000
COORDINATOR_PING_TIMEOUT = 5.0
AGENT_MAX_CONCURRENCY = 2000
# Organs and agents spread over the Ray nodes, so adding nodes adds capacity and losing one
# loses only its share of the organism (the manager heals the rest). Ray's default packs
# small actors onto one node.
ORGANISM_OPTIONS = {"num_cpus": 0.05, "scheduling_strategy": "SPREAD"}
START_HINT = "start it with `python manage.py rundispatcher`"
# The collector's generation thresholds in the hot actors (Python's are 700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 20)


def organ_actor_name(organ_id: str) -> str:
    return f"seedcore_organ_{organ_id}"


def agent_actor_name(agent_id: str) -> str:
    return f"seedcore_{agent_id}"


def dispatcher_name(index: int) -> str:
    return f"{DISPATCHER_PREFIX}{index}"


def ensure_django() -> None:
    """Set Django up in an actor process (once)."""
    from django.apps import apps

    if apps.ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedcore_site.settings")
    import django

    django.setup()


def settle_garbage_collector() -> None:
    """Once an actor is set up: keep what start-up made out of the collector's sight, and
    collect the young generation less often.

    Django, Ray and the handlers leave hundreds of thousands of long-lived objects; every full
    collection walked them all, and each task makes enough short-lived objects (futures, task
    handles, messages) to trigger one every few hundred tasks. Frozen, they are never walked.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# ---------------------------------------------------------------------------------------------
# The shells


class CoordinatorActor:
    def __init__(self, organs: list[dict[str, Any]] | None, namespace: str, task_timeout: float):
        ensure_django()
        from django.conf import settings

        from organism.handlers import autodiscover

        autodiscover()
        specs = parse_organs(organs) if organs else configured_organs()

        async def organ_factory(spec: OrganSpec) -> RayOrganClient:
            return await create_organ(spec, namespace=namespace, default_timeout=task_timeout)

        manager = OrganismManager(
            specs,
            organ_factory,
            drift_threshold=settings.SEEDCORE_DRIFT_THRESHOLD,
            default_timeout=task_timeout,
            cluster=cluster_nodes,
            scale_down_seconds=settings.SEEDCORE_SCALE_DOWN_SECONDS,
            placement_timeout=settings.SEEDCORE_PLACEMENT_TIMEOUT,
        )
        self.coordinator = Coordinator(manager)
        settle_garbage_collector()

    async def run(self, tasks: list[tuple]) -> list[tuple]:
        """One task (a list of one, packed), to its outcome."""
        return pack_outcomes([await self.coordinator.run(unpack_tasks(tasks)[0])])

    async def run_chunks(self, tasks: list[tuple]):
        async for chunk in self.coordinator.run_chunks(unpack_tasks(tasks)):
            yield pack_outcomes(chunk)

    async def cancel(self, task_id: str) -> bool:
        return await self.coordinator.cancel(task_id)

    async def initialize(self) -> bool:
        await self.coordinator.initialize()
        return True

    async def summary(self) -> dict[str, Any]:
        return await self.coordinator.summary()

    async def tick(self, backlog: dict[str, int]) -> dict[str, Any]:
        return await self.coordinator.tick(backlog)

    async def shutdown(self) -> dict[str, Any]:
        return await self.coordinator.shutdown()

    async def ping(self) -> str:
        return self.coordinator.ping()


class OrganActor:
    def __init__(self, spec: dict[str, Any], namespace: str, default_timeout: float):
        async def agent_factory(spec: OrganSpec, agent_id: str) -> RayAgentClient:
            return await create_agent(
                spec, agent_id, namespace=namespace, default_timeout=default_timeout
            )

        self.organ = Organ(parse_organs([spec])[0], agent_factory)

    async def start(self) -> list[RayAgentClient]:
        return await self.organ.start()

    async def add_agents(self, count: int) -> list[RayAgentClient]:
        return await self.organ.add_agents(count)

    async def remove_agents(self, ids: list[str]) -> list[RayAgentClient]:
        return await self.organ.remove_agents(ids)

    async def status(self) -> dict[str, Any]:
        return await self.organ.status()

    async def shutdown(self) -> int:
        return await self.organ.shutdown()

    async def ping(self) -> str:
        return "pong"


class AgentActor:
    def __init__(self, agent_id: str, organ_id: str, default_timeout: float):
        ensure_django()
        from organism import capture
        from organism.handlers import autodiscover

        autodiscover()
        capture.install()  # what handlers log and print, per attempt
        self.agent = Agent(
            agent_id, organ_id, default_timeout=default_timeout, placement=placement(organ_id)
        )
        context = ray.get_runtime_context()
        self.node = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
        settle_garbage_collector()

    async def run(self, tasks: list[tuple]) -> list[tuple]:
        """One task (a list of one, packed), to its outcome."""
        return pack_outcomes([await self.agent.run(unpack_tasks(tasks)[0])])

    async def run_batch(self, tasks: list[tuple]):
        async for chunk in self.agent.run_batch(unpack_tasks(tasks)):
            yield pack_outcomes(chunk)

    async def cancel(self, task_id: str) -> bool:
        return self.agent.cancel(task_id)

    async def state(self) -> dict[str, Any]:
        return {**self.agent.state(), **self.node}

    async def ping(self) -> str:
        return "pong"


class DispatcherActor:
    """One dispatcher: ``start`` (idempotent) runs the loop, ``stop`` ends it gracefully.

    Every start gets a fresh identity ``seedcore_dispatcher_<i>/<8 hex>``, which is what the
    queue stores in ``locked_by``: a restarted dispatcher never passes its predecessor's fence.
    """

    def __init__(self, index: int, config: dict[str, Any]):
        ensure_django()
        from django.db import connections

        # A dispatcher's threads keep their connections (and prepared statements) for as
        # long as they work: CONN_MAX_AGE suits web requests, not a loop claiming every few
        # milliseconds. A connection that fails is still replaced.
        for alias in connections.settings:
            connections.settings[alias]["CONN_MAX_AGE"] = None
        self.index = index
        self.name = dispatcher_name(index)
        self.config = DispatcherConfig(**config)
        self._dispatcher: Dispatcher | None = None
        self._loop_task: asyncio.Task | None = None
        self._waker: NotifyWaker | None = None
        self._store: QueueStore | None = None
        settle_garbage_collector()

    async def start(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._loop_task is not None and not self._loop_task.done():
            return self.status()
        if config:
            self.config = DispatcherConfig(**config)
        identity = f"{self.name}/{uuid.uuid4().hex[:8]}"
        self._store = QueueStore(identity, self.config)
        self._waker = NotifyWaker(index=self.index, peers=self.config.dispatchers)
        self._dispatcher = Dispatcher(
            identity,
            store=self._store,
            coordinator=find_coordinator,
            waker=self._waker,
            config=self.config,
        )
        self._loop_task = asyncio.create_task(self._dispatcher.run())
        self._loop_task.add_done_callback(self._loop_ended)
        return self.status()

    def _loop_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: loop ended", self.name, exc_info=task.exception())

    async def stop(self) -> dict[str, Any]:
        if self._dispatcher is not None and self._loop_task is not None:
            self._dispatcher.stop()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            if self._waker is not None:
                self._waker.close()
            if self._store is not None:
                await asyncio.to_thread(self._store.close)
        return self.status()

    def status(self) -> dict[str, Any]:
        running = self._loop_task is not None and not self._loop_task.done()
        base = {"name": self.name, "node": os.uname().nodename, "pid": os.getpid()}
        if self._dispatcher is None:
            return {**base, "identity": None, "running": False, "in_flight": 0, "processed": 0}
        return {**base, **self._dispatcher.status(), "running": running}

    def ping(self) -> str:
        return "pong"


def placement(organ_id: str) -> Placement:
    """Where this actor's process runs, from Ray's runtime context: read once per agent
    process, so no task pays for a Ray call to learn it."""
    context = ray.get_runtime_context()
    return Placement(
        context.get_node_id(),
        ray.util.get_node_ip_address(),
        os.getpid(),
        context.get_actor_id(),
        organ_id,
    )


class ClockActor:
    """benchdispatch's bare actor: an async actor, as the Coordinator and agents are, whose
    one method says how long its call took to start it."""

    async def since(self, sent: float) -> float:
        return time.time() - sent


# ---------------------------------------------------------------------------------------------
# Creating actors: every .options() is here


@cache
def _remote(shell: type) -> Any:
    """``shell`` as a Ray actor class, built once per process on first use."""
    return ray.remote(shell)


def _get_or_create(shell: type, name: str, namespace: str, *args: Any, **options: Any) -> Any:
    """The detached actor ``name``: the running one, or a new ``shell(*args)``. Two creators
    racing get the same actor (``get_if_exists``)."""
    return (
        _remote(shell)
        .options(name=name, namespace=namespace, lifetime="detached", get_if_exists=True, **options)
        .remote(*args)
    )


def get_or_create_coordinator(
    *,
    namespace: str | None = None,
    organs: list[dict[str, Any]] | None = None,
    task_timeout: float | None = None,
) -> Any:
    """The Coordinator's handle, creating the detached actor if it is absent.

    ``organs`` (plain dicts as in SEEDCORE_ORGANS) and ``task_timeout`` override the settings
    for a newly created Coordinator only.
    """
    from django.conf import settings

    namespace = namespace or settings.RAY_NAMESPACE
    try:
        return get_coordinator(namespace)
    except CoordinatorUnavailable:
        pass
    # A bad spec fails here, in the caller, not inside the actor.
    if organs is None:
        configured_organs()
    else:
        parse_organs(organs)
    timeout = task_timeout or settings.SEEDCORE_TASK_TIMEOUT
    return _get_or_create(
        CoordinatorActor,
        COORDINATOR_NAME,
        namespace,
        organs,
        namespace,
        timeout,
        num_cpus=0.1,
        max_concurrency=COORDINATOR_MAX_CONCURRENCY,
    )


def create_clock() -> Any:
    """A :class:`ClockActor`, owned by the caller (it ends with the caller's Ray session)."""
    return _remote(ClockActor).options(num_cpus=0).remote()


async def create_organ(spec: OrganSpec, *, namespace: str, default_timeout: float):
    name = organ_actor_name(spec.id)
    handle = await asyncio.to_thread(
        _get_or_create,
        OrganActor,
        name,
        namespace,
        spec.as_dict(),
        namespace,
        default_timeout,
        **ORGANISM_OPTIONS,
    )
    return RayOrganClient(spec, handle, name, namespace)


def agent_options(spec: OrganSpec) -> dict[str, Any]:
    """The actor options of the organ's agents: spread over the nodes with a small CPU share,
    unless the organ's ``ray`` options (num_cpus, num_gpus, memory, resources, runtime_env,
    label_selector) say otherwise."""
    options = {**ORGANISM_OPTIONS, **spec.ray}
    if spec.ray.get("resources"):
        options["resources"] = dict(spec.ray["resources"])
    return options


async def create_agent(spec: OrganSpec, agent_id: str, *, namespace: str, default_timeout: float):
    """The agent's actor, created (or found) but not waited for: Ray places it when a node
    has what it asks for; the organ watches for that (organism.organ.Organ)."""
    name = agent_actor_name(agent_id)
    handle = await asyncio.to_thread(
        _get_or_create,
        AgentActor,
        name,
        namespace,
        agent_id,
        spec.id,
        default_timeout,
        max_concurrency=AGENT_MAX_CONCURRENCY,
        **agent_options(spec),
    )
    # Not waited for: an agent may stay pending placement (resources not free) for long; the
    # manager learns where it runs from its first state once placed.
    return RayAgentClient(agent_id, handle, name, namespace)


async def cluster_nodes() -> list[dict[str, Any]]:
    """The Ray cluster's live nodes with their total and free resources (Ray's logical
    resources: what actors asked for, not what they use), memory in bytes."""
    return await asyncio.to_thread(_cluster_nodes)


def _cluster_nodes() -> list[dict[str, Any]]:
    from ray._private import state

    free = state.available_resources_per_node()
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        node_id = node["NodeID"]
        total = _resources(node.get("Resources") or {})
        available = _resources(free.get(node_id) or {})
        custom = [
            {"name": name, "free": available.get(name, 0), "total": amount}
            for name, amount in sorted(total.items())
            if name not in ("CPU", "GPU", "memory")
        ]
        nodes.append(
            {
                "node_id": node_id,
                "ip": node.get("NodeManagerAddress"),
                "alive": True,
                "total": total,
                "free": available,
                "custom": custom,
            }
        )
    return sorted(nodes, key=lambda n: n["node_id"])


def _resources(raw: dict[str, float]) -> dict[str, float]:
    # Ray's own bookkeeping resources (node:<ip>, accelerator_type:…) say nothing to an operator.
    return {
        k: round(v, 3)
        for k, v in raw.items()
        if not k.startswith("node:") and k != "object_store_memory"
    }


def get_or_create_dispatcher(index: int, config: DispatcherConfig, namespace: str) -> Any:
    """The detached actor ``seedcore_dispatcher_<index>``: the running one, or a new one."""
    return _get_or_create(
        DispatcherActor,
        dispatcher_name(index),
        namespace,
        index,
        config.as_dict(),
        num_cpus=0,
        max_restarts=0,
    )


# ---------------------------------------------------------------------------------------------
# Finding actors


def get_coordinator(namespace: str | None = None) -> Any:
    """The running Coordinator's handle; CoordinatorUnavailable if there is none."""
    from django.conf import settings

    namespace = namespace or settings.RAY_NAMESPACE
    try:
        return ray.get_actor(COORDINATOR_NAME, namespace=namespace)
    except ValueError:
        raise CoordinatorUnavailable(
            f"no Coordinator ({COORDINATOR_NAME}) in Ray namespace {namespace!r}; {START_HINT}"
        ) from None


async def find_coordinator() -> RayCoordinatorClient:
    """Look the Coordinator up and make sure it answers; CoordinatorUnavailable otherwise."""
    try:
        handle = await asyncio.to_thread(get_coordinator)
        await asyncio.wait_for(handle.ping.remote(), COORDINATOR_PING_TIMEOUT)
    except CoordinatorUnavailable:
        raise
    except Exception as exc:
        raise CoordinatorUnavailable(f"coordinator unavailable: {exc}") from exc
    return RayCoordinatorClient(handle)


def existing_dispatchers(namespace: str) -> dict[int, Any]:
    """Index → handle of every live named dispatcher actor in ``namespace``."""
    from ray.util import list_named_actors

    found = {}
    for entry in list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] != namespace or not name.startswith(DISPATCHER_PREFIX):
            continue
        suffix = name[len(DISPATCHER_PREFIX) :]
        if suffix.isdigit():
            try:
                found[int(suffix)] = ray.get_actor(name, namespace=namespace)
            except ValueError:
                continue
    return found
