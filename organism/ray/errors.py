"""Ray's exceptions, translated into SeedCore's own (:mod:`organism.messages`) at the calls.

So the plain classes catch :class:`~organism.messages.ActorUnavailable`,
:class:`~organism.messages.ActorTimeout` and :class:`~organism.messages.CallCancelled`, and
never need to know Ray's exception classes (or compare their names).

When Ray says what was lost (the actor, its node, its worker to the memory monitor, an object),
the ActorUnavailable carries it as its ``kind`` (:func:`system_kind`): a call to an agent that
fails so makes its attempts SYSTEM failures, retried at once (``organism.manager``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from ray.exceptions import (
    LocalRayletDiedError,
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayActorError,
    TaskCancelledError,
    WorkerCrashedError,
)

from organism.messages import ActorTimeout, ActorUnavailable, CallCancelled

# Ray's exceptions that mean the system, not the code called, lost the call.
LOST = (
    RayActorError,
    OutOfMemoryError,
    NodeDiedError,
    ObjectLostError,
    WorkerCrashedError,
    LocalRayletDiedError,
)
# How Ray's own messages say an actor's node died, or its worker was killed for memory.
_NODE_DIED = re.compile(r"node (has died|was removed|is dead)", re.IGNORECASE)
_OUT_OF_MEMORY = re.compile(r"out of memory|memory pressure|memory monitor|\boom\b", re.IGNORECASE)


def system_kind(exc: BaseException) -> str | None:
    """What Ray lost, as a SYSTEM outcome's kind (``organism.messages.SYSTEM_KINDS``), or None
    when ``exc`` is not such a loss."""
    if isinstance(exc, OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, NodeDiedError | LocalRayletDiedError):
        return "node_died"
    if isinstance(exc, ObjectLostError):  # OwnerDiedError, ObjectReconstructionFailedError, …
        return "object_lost"
    if isinstance(exc, WorkerCrashedError):
        return "worker_died"
    if isinstance(exc, RayActorError):
        message = str(exc)
        if exc.preempted or _NODE_DIED.search(message):
            return "node_died"
        if _OUT_OF_MEMORY.search(message):
            return "out_of_memory"
        return "actor_died"
    return None


@contextmanager
def translated(what: str, unavailable: type[ActorUnavailable] = ActorUnavailable) -> Iterator[None]:
    """Make a call to ``what`` (an actor, as messages name it) with Ray's failures translated:
    no answer in time is ActorTimeout, a cancelled call CallCancelled, and a dead or vanished
    actor (or a lost node, worker or object) ``unavailable``, with its ``kind``."""
    try:
        yield
    except TimeoutError:  # ray.get's GetTimeoutError, and asyncio.wait_for's
        raise ActorTimeout(f"{what} did not answer in time") from None
    except TaskCancelledError:
        raise CallCancelled(f"the call to {what} was cancelled") from None
    except LOST as exc:
        raise unavailable(
            f"{what} died or cannot be reached ({type(exc).__name__})", kind=system_kind(exc)
        ) from exc
