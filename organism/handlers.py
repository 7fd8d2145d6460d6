"""The task handler registry: a task's ``type`` names the code that runs it.

Apps register handlers in their ``handlers`` module, found by :func:`autodiscover` (as the
admin finds ``admin.py``)::

    from organism.handlers import PermanentError, handler

    @handler("resize_image", max_attempts=3, timeout=60)
    def resize_image(params: dict, ctx: TaskContext) -> dict:
        ...

A handler takes the task's params and a :class:`TaskContext`, may be sync or async, and
returns a JSON-serialisable value. An exception fails the attempt (with its traceback) and the
task is retried; :class:`PermanentError` fails it for good. Sync handlers run in a thread and
should poll ``ctx.is_cancelled()``; async ones can ``await ctx.wait_cancelled(seconds)``.

Built-in types (this module): ``echo``, ``test``, ``probe``, ``sleep``, ``fail``, and the control
types that act on the organism itself (``control=True``; the Coordinator runs them, with
``ctx.organism`` set to its OrganismManager).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HandlerFunc = Callable[[dict, "TaskContext"], Any]


class PermanentError(Exception):
    """Raise from a handler for an error that retrying cannot fix: the task FAILS at once."""


class TaskCancelled(Exception):
    """Raise from a handler that noticed ``ctx.is_cancelled()`` and stopped early."""


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    func: HandlerFunc
    max_attempts: int | None = None
    timeout: float | None = None
    control: bool = False
    # How many tasks of this type may run at once across all dispatchers (None: no limit).
    concurrency: int | None = None
    # The organ its tasks run on (None: the routing rules choose), e.g. one with GPUs.
    organ: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


@dataclass
class TaskContext:
    """What a running handler knows about its task, and how it learns it was cancelled."""

    task_id: str
    attempt: int = 1
    # The OrganismManager, set only for control types run by the Coordinator.
    organism: Any = None
    # A plain flag, not a threading.Event: one is made per task, and setting and reading a
    # bool is atomic under the GIL, which is all a sync handler's thread needs.
    _cancelled: bool = field(default=False, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = field(
        default_factory=list, repr=False
    )

    def is_cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Set the cancelled flag; safe from any thread."""
        self._cancelled = True
        for loop, waiter in list(self._waiters):
            loop.call_soon_threadsafe(_answer, waiter, True)

    async def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a cancel; True if the task was cancelled."""
        if self._cancelled:
            return True
        # One future and one timer: this is how built-in handlers sleep, thousands at once.
        loop = asyncio.get_running_loop()
        waiter = (loop, loop.create_future())
        self._waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _answer, waiter[1], False)
        try:
            if self._cancelled:  # set between the check and the registration
                return True
            return await waiter[1] or self._cancelled
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.remove(waiter)


def _answer(waiter: asyncio.Future, cancelled: bool) -> None:
    if not waiter.done():
        waiter.set_result(cancelled)


_registry: dict[str, HandlerSpec] = {}


def handler(
    type: str,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    control: bool = False,
    concurrency: int | None = None,
    organ: str | None = None,
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register ``fn(params, ctx)`` as the handler of task type ``type``.

    ``max_attempts`` caps the task's attempts (a task's own cap wins); ``timeout`` (seconds)
    ends an attempt that runs longer, default SEEDCORE_TASK_TIMEOUT; ``concurrency`` caps how
    many tasks of the type run at once across all dispatchers (``rundispatcher`` records it
    at start; an operator's limit from the API or the admin wins over it); ``organ`` names the
    organ (SEEDCORE_ORGANS) its tasks run on, whatever the other routing rules say: the one
    whose agents have the resources it needs (``rundispatcher`` refuses an unknown name).
    """
    if not type or not isinstance(type, str):
        raise ValueError("a handler's type must be a non-empty string")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError(f"handler {type!r}: max_attempts must be at least 1")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"handler {type!r}: timeout must be positive")
    if concurrency is not None and (isinstance(concurrency, bool) or concurrency < 1):
        raise ValueError(f"handler {type!r}: concurrency must be at least 1")
    if organ is not None and (not isinstance(organ, str) or not organ.strip()):
        raise ValueError(f"handler {type!r}: organ must be an organ's id")
    if organ is not None and control:
        raise ValueError(f"handler {type!r}: a control type runs on the Coordinator, not an organ")

    def register(fn: HandlerFunc) -> HandlerFunc:
        existing = _registry.get(type)
        if existing is not None and _qualname(existing.func) != _qualname(fn):
            raise ValueError(
                f"task type {type!r} already has a handler, {_qualname(existing.func)}"
            )
        _registry[type] = HandlerSpec(type, fn, max_attempts, timeout, control, concurrency, organ)
        return fn

    return register


def get_handler(type: str) -> HandlerSpec | None:
    return _registry.get(type)


def registered_types() -> list[str]:
    return sorted(_registry)


def declared_concurrency() -> dict[str, int]:
    """The concurrency limit each registered handler declares, by type."""
    return {t: spec.concurrency for t, spec in _registry.items() if spec.concurrency is not None}


def bound_organs() -> dict[str, str]:
    """The organ each registered handler names (``@handler(..., organ=...)``), by type."""
    return {t: spec.organ for t, spec in _registry.items() if spec.organ is not None}


def missing_handler_message(type: str) -> str:
    return f"no handler registered for type '{type}'"


# The modules of each installed app that autodiscover imports: ``handlers`` (@handler
# functions) and ``tasks`` (Django's @task functions bound to tasks.backends.SeedCoreBackend,
# which register themselves as the handlers of their import paths).
DISCOVERED_MODULES = ("handlers", "tasks")


def autodiscover() -> None:
    """Import ``<app>.handlers`` and ``<app>.tasks`` for every installed app that has them.

    These are the only modules imported to find handlers: a task's ``type`` is looked up in
    the registry, never imported, so a row naming any other function cannot make it run.
    """
    from django.apps import apps

    for config in apps.get_app_configs():
        for module in DISCOVERED_MODULES:
            name = f"{config.name}.{module}"
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:  # the module exists but one of its imports is missing
                    raise


def _qualname(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


# ---------------------------------------------------------------------------------------------
# Built-ins that run on agents


@handler("echo")
async def echo(params: dict, ctx: TaskContext) -> dict:
    """Return the params unchanged."""
    return params


@handler("test")
async def smoke_test(params: dict, ctx: TaskContext) -> dict:
    """The design's smoke test: proves a task reached an agent and came back."""
    return {
        "status": "ok",
        "message": "SeedCore smoke test completed",
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "host": platform.node(),
        "params": params,
    }


@handler("probe")
async def probe(params: dict, ctx: TaskContext) -> dict:
    """Say when the handler started (``time.time()`` here, in the agent), then sleep
    ``params.sleep`` seconds if given: what ``benchdispatch`` times a start and a busy task by."""
    started_at = time.time()
    seconds = params.get("sleep", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise PermanentError("params.sleep must be a non-negative number")
    if seconds and await ctx.wait_cancelled(float(seconds)):
        raise TaskCancelled("cancelled")
    return {"started_at": started_at}


@handler("sleep")
async def sleep(params: dict, ctx: TaskContext) -> dict:
    """Sleep ``params.seconds``; a cancel ends it at once."""
    seconds = params.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise PermanentError("params.seconds must be a non-negative number")
    started = time.monotonic()
    if await ctx.wait_cancelled(float(seconds)):
        raise TaskCancelled(f"cancelled after {time.monotonic() - started:.3f} s")
    return {"slept": seconds}


@handler("fail")
async def fail(params: dict, ctx: TaskContext) -> None:
    """Fail on purpose; ``params.permanent`` true makes the failure permanent."""
    message = str(params.get("message") or "failed on purpose (fail task)")
    if params.get("permanent"):
        raise PermanentError(message)
    raise RuntimeError(message)


# ---------------------------------------------------------------------------------------------
# Control types: the Coordinator runs them against its OrganismManager (ctx.organism)


# Creating or killing a few dozen actors on a busy cluster can take a while; a short task
# timeout (SEEDCORE_TASK_TIMEOUT) must not cut it off half-way.
LIFECYCLE_TIMEOUT = 600.0


def _task_param(params: dict) -> dict:
    task = params.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str):
        raise PermanentError("params.task must be an object with a 'type'")
    return task


@handler("get_organism_status", control=True)
async def get_organism_status(params: dict, ctx: TaskContext) -> list:
    return await ctx.organism.status()


@handler("get_organism_summary", control=True)
async def get_organism_summary(params: dict, ctx: TaskContext) -> dict:
    return await ctx.organism.summary()


@handler("execute_on_organ", control=True)
async def execute_on_organ(params: dict, ctx: TaskContext) -> dict:
    organ_id = params.get("organ_id")
    if not isinstance(organ_id, str) or not organ_id:
        raise PermanentError("params.organ_id must name an organ")
    return await ctx.organism.execute_on_organ(organ_id, _task_param(params), ctx)


@handler("execute_on_random_organ", control=True)
async def execute_on_random_organ(params: dict, ctx: TaskContext) -> dict:
    return await ctx.organism.execute_on_organ(None, _task_param(params), ctx)


@handler("initialize_organism", control=True, timeout=LIFECYCLE_TIMEOUT)
async def initialize_organism(params: dict, ctx: TaskContext) -> dict:
    await ctx.organism.initialize()
    return await ctx.organism.summary()


@handler("shutdown_organism", control=True, timeout=LIFECYCLE_TIMEOUT)
async def shutdown_organism(params: dict, ctx: TaskContext) -> dict:
    return await ctx.organism.shutdown()


@handler("get_metrics", control=True)
async def get_metrics(params: dict, ctx: TaskContext) -> dict:
    return await ctx.organism.metrics()


CONTROL_TYPES = tuple(t for t, spec in _registry.items() if spec.control)
