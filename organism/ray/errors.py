"""Ray's exceptions, translated into SeedCore's own (:mod:`organism.messages`) at the calls.

So the plain classes catch :class:`~organism.messages.ActorUnavailable`,
:class:`~organism.messages.ActorTimeout` and :class:`~organism.messages.CallCancelled`, and
never need to know Ray's exception classes (or compare their names).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ray.exceptions import RayActorError, TaskCancelledError

from organism.messages import ActorTimeout, ActorUnavailable, CallCancelled


@contextmanager
def translated(what: str, unavailable: type[ActorUnavailable] = ActorUnavailable) -> Iterator[None]:
    """Make a call to ``what`` (an actor, as messages name it) with Ray's failures translated:
    no answer in time is ActorTimeout, a cancelled call CallCancelled, and a dead or vanished
    actor ``unavailable``."""
    try:
        yield
    except TimeoutError:  # ray.get's GetTimeoutError, and asyncio.wait_for's
        raise ActorTimeout(f"{what} did not answer in time") from None
    except TaskCancelledError:
        raise CallCancelled(f"the call to {what} was cancelled") from None
    except RayActorError as exc:
        raise unavailable(f"{what} died or cannot be reached ({type(exc).__name__})") from exc
