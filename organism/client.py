"""The web side's calls to the Coordinator actor, all async and all bounded by a timeout.

Nothing here blocks the event loop: ``ray.init`` and ``ray.get_actor`` run in a thread, and
object refs are awaited as futures. Every way the Coordinator can be out of reach (Ray not
running, the actor not started, a call timing out, the actor dying) becomes
:class:`CoordinatorUnavailable`, whose message says how to fix it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from django.conf import settings

from organism.actors import COORDINATOR_NAME
from organism.raycluster import RayUnavailable, ensure_connected

PING_TIMEOUT = 3.0
START_HINT = "start it with `python manage.py rundispatcher`"

T = TypeVar("T")


class CoordinatorUnavailable(Exception):
    """Ray or the Coordinator cannot be reached; the message says what to do."""


class CoordinatorTimeout(CoordinatorUnavailable):
    """The Coordinator was reached but did not answer in time."""


class CoordinatorError(Exception):
    """The Coordinator answered, with an error from the handler it ran."""

    def __init__(self, message: str, *, permanent: bool = False):
        self.permanent = permanent
        super().__init__(message)


# The connection to Ray is per process (ray.init is global state), so one connection attempt
# at a time is shared by every request; an attempt that hangs (an unreachable RAY_ADDRESS can
# make ray.init wait minutes) then costs one thread, not one per request.
_connect_lock = threading.Lock()
_connect_attempt: concurrent.futures.Future | None = None


def _connect_in_thread(future: concurrent.futures.Future) -> None:
    try:
        ensure_connected()
    except BaseException as exc:  # handed to the awaiting request, whatever it is
        future.set_exception(exc)
    else:
        future.set_result(None)


def _current_connect_attempt() -> concurrent.futures.Future:
    global _connect_attempt
    with _connect_lock:
        if _connect_attempt is None or _connect_attempt.done():
            _connect_attempt = concurrent.futures.Future()
            threading.Thread(
                target=_connect_in_thread,
                args=(_connect_attempt,),
                name="seedcore-ray-connect",
                daemon=True,
            ).start()
        return _connect_attempt


async def connect(timeout: float | None = None) -> None:
    """Connect this process to Ray (once); raises CoordinatorUnavailable if it cannot.

    ``timeout`` defaults to SEEDCORE_RAY_CONNECT_TIMEOUT.
    """
    import ray

    if ray.is_initialized():
        return
    timeout = timeout if timeout is not None else settings.SEEDCORE_RAY_CONNECT_TIMEOUT
    attempt = asyncio.wrap_future(_current_connect_attempt())
    try:
        await asyncio.wait_for(asyncio.shield(attempt), timeout)
    except TimeoutError:
        raise CoordinatorUnavailable(
            f"Ray did not answer within {timeout:g} s; check RAY_ADDRESS, or {START_HINT}"
        ) from None
    except RayUnavailable as exc:
        message = str(exc)
        if "rundispatcher" not in message:
            message = f"{message}; or {START_HINT}"
        raise CoordinatorUnavailable(message) from None
    except Exception as exc:
        raise CoordinatorUnavailable(f"cannot connect to Ray ({exc}); {START_HINT}") from None


async def _bounded(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    from ray.exceptions import RayActorError

    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise CoordinatorTimeout(
            f"the Coordinator did not answer {what} within {timeout:g} s"
        ) from None
    except RayActorError as exc:
        raise CoordinatorUnavailable(
            f"the Coordinator died while answering {what} ({type(exc).__name__}); {START_HINT}"
        ) from None


def _await_ref(ref: Any) -> asyncio.Future:
    # A concurrent future works on whichever event loop awaits it (the ASGI server's, or a
    # fresh one per request under the test client), unlike the ref's own loop binding.
    return asyncio.wrap_future(ref.future())


async def get_coordinator() -> Any:
    """The Coordinator's actor handle; raises CoordinatorUnavailable when it is not running."""
    import ray

    await connect()

    def lookup() -> Any:
        try:
            return ray.get_actor(COORDINATOR_NAME, namespace=settings.RAY_NAMESPACE)
        except ValueError:
            return None

    handle = await _bounded(
        asyncio.to_thread(lookup), settings.SEEDCORE_RAY_CONNECT_TIMEOUT, "a lookup"
    )
    if handle is None:
        raise CoordinatorUnavailable(
            f"the Coordinator is not running in Ray namespace {settings.RAY_NAMESPACE!r}; "
            f"{START_HINT}"
        )
    return handle


async def ping(timeout: float = PING_TIMEOUT) -> float:
    """Round-trip time of the Coordinator's ``ping``, in milliseconds."""
    coordinator = await get_coordinator()
    started = time.perf_counter()
    await _bounded(_await_ref(coordinator.ping.remote()), timeout, "ping")
    return (time.perf_counter() - started) * 1000.0


def control_task(task_type: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task dict the Coordinator's ``handle`` takes for a control call (not queued)."""
    return {
        "id": f"api-{uuid.uuid4()}",
        "type": task_type,
        "params": params or {},
        "attempts": 1,
        "drift_score": 0.0,
    }


async def call(
    task_type: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
) -> Any:
    """Run a control task on the Coordinator and return its output.

    ``timeout`` defaults to SEEDCORE_COORDINATOR_TIMEOUT.
    Raises CoordinatorUnavailable (or CoordinatorTimeout) when it cannot be reached in time,
    CoordinatorError when the handler it ran failed.
    """
    timeout = timeout if timeout is not None else settings.SEEDCORE_COORDINATOR_TIMEOUT
    coordinator = await get_coordinator()
    outcome = await _bounded(
        _await_ref(coordinator.handle.remote(control_task(task_type, params))),
        timeout,
        task_type,
    )
    if not outcome.get("ok"):
        raise CoordinatorError(
            outcome.get("error") or f"{task_type} failed", permanent=bool(outcome.get("permanent"))
        )
    result = outcome.get("result") or {}
    return result.get("output")
