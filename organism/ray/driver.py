"""What ``rundispatcher``'s supervisor asks of the actors: sync calls, each bounded by a timeout.

Ray's failures come back as SeedCore's (:mod:`organism.messages`): ActorTimeout when an actor
did not answer in time (it may be busy), ActorUnavailable when it is dead or gone.
The handles come from :mod:`organism.ray.actors` (``get_or_create_coordinator`` and the like).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import ray

from organism.dispatcher import DispatcherConfig
from organism.ray.errors import translated


def ping(coordinator: Any, timeout: float) -> float:
    """The Coordinator's ping round trip, in milliseconds."""
    started = time.perf_counter()
    with translated("the Coordinator"):
        ray.get(coordinator.ping.remote(), timeout=timeout)
    return (time.perf_counter() - started) * 1000


def initialize_organism(coordinator: Any, timeout: float) -> None:
    with translated("the Coordinator"):
        ray.get(coordinator.initialize.remote(), timeout=timeout)


def organism_summary(coordinator: Any, timeout: float) -> dict[str, Any]:
    """Organs, agents and load, as ``get_organism_summary`` answers."""
    with translated("the Coordinator"):
        return ray.get(coordinator.summary.remote(), timeout=timeout)


def organism_tick(coordinator: Any, backlog: dict[str, int], timeout: float) -> dict[str, Any]:
    """One scaling round on the backlog per task type; the summary, with the held types."""
    with translated("the Coordinator"):
        return ray.get(coordinator.tick.remote(backlog), timeout=timeout)


def shutdown_organism(coordinator: Any, timeout: float) -> dict[str, Any]:
    """Stop the organs and agents (detached actors too), as ``shutdown_organism`` does."""
    with translated("the Coordinator"):
        return ray.get(coordinator.shutdown.remote(), timeout=timeout)


def kill(handle: Any) -> None:
    with translated("the actor"):
        ray.kill(handle)


def start_dispatchers(
    handles: dict[int, Any], config: DispatcherConfig, timeout: float
) -> dict[int, dict[str, Any] | Exception]:
    """Start (idempotently) every dispatcher at once; index → its status, or the exception
    it gave instead: ActorTimeout if it is busy, anything else if it is dead."""
    refs = {index: handle.start.remote(config.as_dict()) for index, handle in handles.items()}
    answers: dict[int, dict[str, Any] | Exception] = {}
    for index, ref in refs.items():
        try:
            with translated(f"dispatcher {index}"):
                answers[index] = ray.get(ref, timeout=timeout)
        except Exception as exc:
            answers[index] = exc
    return answers


def stop_dispatchers(handles: list[Any], timeout: float, *, kill: bool) -> int:
    """Stop dispatchers gracefully, all at once, then (``kill``) end the actors; returns how
    many tasks they released back to the queue."""
    refs = [handle.stop.remote() for handle in handles]
    released = 0
    for ref in refs:
        # Already dead, or stuck: killing it below is all that is left to do.
        with contextlib.suppress(Exception):
            released += ray.get(ref, timeout=timeout).get("released", 0)
    if kill:
        for handle in handles:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(handle)
    return released
