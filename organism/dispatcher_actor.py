"""The Ray shell around :class:`organism.dispatcher.Dispatcher`, and what it needs on Ray.

The remote class is built only when first asked for (:func:`dispatcher_actor_class`), so
importing this module needs neither Ray nor a database. Each actor process sets Django up
from its runtime environment (``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``) and owns its
database connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

from organism.dispatcher import (
    CoordinatorUnavailable,
    Dispatcher,
    DispatcherConfig,
    QueueStore,
)

logger = logging.getLogger("seedcore.dispatcher")

DISPATCHER_PREFIX = "seedcore_dispatcher_"
COORDINATOR_PING_TIMEOUT = 5.0


def dispatcher_name(index: int) -> str:
    return f"{DISPATCHER_PREFIX}{index}"


class RayCoordinatorClient:
    """The dispatcher's view of the Coordinator actor: stream a batch, cancel one task."""

    def __init__(self, handle: Any):
        self._handle = handle

    async def run_batch(self, tasks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        # Chunks, not one Ray object per outcome: a message per task caps throughput near
        # 1,000 tasks/s; outcomes finished together travel together.
        async for ref in self._handle.handle_chunks.remote(tasks):
            for outcome in await ref:
                yield outcome

    async def cancel(self, task_id: str) -> bool:
        return bool(await self._handle.cancel.remote(task_id))


async def find_coordinator() -> RayCoordinatorClient:
    """Look the Coordinator up and make sure it answers; CoordinatorUnavailable otherwise."""
    from organism import actors

    try:
        handle = await asyncio.to_thread(actors.get_coordinator)
        await asyncio.wait_for(handle.ping.remote(), COORDINATOR_PING_TIMEOUT)
    except Exception as exc:
        raise CoordinatorUnavailable(f"coordinator unavailable: {exc}") from exc
    return RayCoordinatorClient(handle)


class NotifyWaker:
    """Wake when PostgreSQL announces a claimable task (NOTIFY seedcore_tasks), or on timeout.

    The dispatcher waits with its poll interval as the timeout, so polling remains only as a
    safety net: for a NOTIFY lost while the listening connection (async psycopg, separate from
    the queue's connections) was down and being reconnected.
    """

    def __init__(self, using: str = "default"):
        self._using = using
        self._claimable = asyncio.Event()
        self._listener: asyncio.Task | None = None

    async def __call__(self, timeout: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._claimable.wait(), timeout)
        self._claimable.clear()

    async def _listen(self) -> None:
        from tasks.queue import NOTIFY_CHANNEL
        from tasks.sql import listen_forever

        await listen_forever(
            NOTIFY_CHANNEL,
            # Tasks queued before LISTEN took effect are found by the next claim.
            on_listen=self._claimable.set,
            on_notify=self._notified,
            using=self._using,
        )

    def _notified(self, payload: str) -> None:
        if '"QUEUED"' in payload or '"RETRY"' in payload:
            self._claimable.set()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()


class DispatcherActor:
    """One dispatcher actor: ``start`` (idempotent) runs the loop, ``stop`` ends it gracefully.

    Every start gets a fresh identity ``seedcore_dispatcher_<i>/<8 hex>``, which is what the
    queue stores in ``locked_by``: a restarted dispatcher never passes its predecessor's fence.
    """

    def __init__(self, index: int, config: dict[str, Any]):
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedcore_site.settings")
        import django

        django.setup()
        self.index = index
        self.name = dispatcher_name(index)
        self.config = DispatcherConfig(**config)
        self._dispatcher: Dispatcher | None = None
        self._loop_task: asyncio.Task | None = None
        self._waker: NotifyWaker | None = None
        self._store: QueueStore | None = None

    async def start(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._loop_task is not None and not self._loop_task.done():
            return self.status()
        if config:
            self.config = DispatcherConfig(**config)
        identity = f"{self.name}/{uuid.uuid4().hex[:8]}"
        self._store = QueueStore(identity, self.config)
        self._waker = NotifyWaker()
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


@cache
def dispatcher_actor_class():
    """The ray.remote class, built on first use so importing this module needs no Ray."""
    import ray

    return ray.remote(DispatcherActor)


def get_or_create_dispatcher(index: int, config: DispatcherConfig, namespace: str):
    """The detached actor ``seedcore_dispatcher_<index>``: the running one, or a new one."""
    return (
        dispatcher_actor_class()
        .options(
            name=dispatcher_name(index),
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=0,
        )
        .remote(index, config.as_dict())
    )


def existing_dispatchers(namespace: str) -> dict[int, Any]:
    """Index → handle of every live named dispatcher actor in ``namespace``."""
    import ray
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
