"""An agent: runs task handlers and keeps its own record. Plain Python; actors.py wraps it.

Every outcome is a plain dict (see :func:`outcome`); the OrganismManager adds the routing path.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from organism.handlers import (
    HandlerSpec,
    PermanentError,
    TaskCancelled,
    TaskContext,
    get_handler,
    missing_handler_message,
)

CAPABILITY_WEIGHT = 0.1  # how much one task moves the moving average of success
# Sync handlers run in threads; the default executor (cores + 4) would let a few slow ones
# hold up every other sync task of the agent.
SYNC_HANDLER_THREADS = 64


def attempt_of(task: dict[str, Any]) -> int:
    """The attempt number a task dict carries (``attempts`` from a claim, or ``attempt``)."""
    return int(task.get("attempts") or task.get("attempt") or 0)


def outcome(
    task: dict[str, Any],
    *,
    ok: bool,
    output: Any = None,
    routing: dict[str, Any] | None = None,
    error: str | None = None,
    traceback: str | None = None,
    permanent: bool = False,
    cancelled: bool = False,
    spec: HandlerSpec | None = None,
) -> dict[str, Any]:
    """The one shape of an attempt's outcome, as the Coordinator returns it."""
    return {
        "id": str(task.get("id", "")),
        "attempt": attempt_of(task),
        "ok": ok,
        "result": {"output": output, "routing": routing or {}} if ok else None,
        "error": error,
        "traceback": traceback,
        "permanent": permanent,
        "cancelled": cancelled,
        "max_attempts": spec.max_attempts if spec else None,
    }


class Agent:
    def __init__(self, agent_id: str, organ_id: str, *, default_timeout: float = 300.0):
        self.agent_id = agent_id
        self.organ_id = organ_id
        self.default_timeout = default_timeout
        self.tasks_processed = 0
        self.successes = 0
        self.failures = 0
        self.capability = 1.0
        self.last_task_at: float | None = None
        self._running: dict[str, tuple[TaskContext, asyncio.Task]] = {}
        self._threads: ThreadPoolExecutor | None = None

    @property
    def load(self) -> int:
        return len(self._running)

    def state(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "organ_id": self.organ_id,
            "tasks_processed": self.tasks_processed,
            "successes": self.successes,
            "failures": self.failures,
            "capability": round(self.capability, 4),
            "load": self.load,
            "last_task_at": self.last_task_at,
        }

    async def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one task to its outcome; never raises (but a cancel of the caller propagates)."""
        task_id = str(task.get("id", ""))
        spec = get_handler(str(task.get("type", "")))
        if spec is None or spec.control:
            reason = missing_handler_message(str(task.get("type")))
            if spec is not None:
                reason = f"control type '{spec.type}' runs on the Coordinator, not on an agent"
            return outcome(task, ok=False, error=reason, permanent=True)
        ctx = TaskContext(task_id=task_id, attempt=attempt_of(task) or 1)
        started = time.perf_counter()
        job = asyncio.ensure_future(self._call(spec, task, ctx))
        self._running[task_id] = (ctx, job)
        timeout = spec.timeout or self.default_timeout
        try:
            value = await asyncio.wait_for(asyncio.shield(job), timeout)
        except TimeoutError:
            ctx.cancel()
            job.cancel()
            result = outcome(task, ok=False, error=f"timed out after {timeout:g} s", spec=spec)
        except asyncio.CancelledError:
            if not ctx.is_cancelled():  # our caller was cancelled: stop the handler too
                ctx.cancel()
                job.cancel()
                raise
            result = outcome(task, ok=False, cancelled=True, error="cancelled", spec=spec)
        except (TaskCancelled, PermanentError, Exception) as exc:
            cancelled = ctx.is_cancelled() or isinstance(exc, TaskCancelled)
            result = outcome(
                task,
                ok=False,
                error="cancelled" if cancelled else f"{type(exc).__name__}: {exc}",
                traceback=None if cancelled else _format(exc),
                permanent=isinstance(exc, PermanentError),
                cancelled=cancelled,
                spec=spec,
            )
        else:
            if ctx.is_cancelled():
                result = outcome(task, ok=False, cancelled=True, error="cancelled", spec=spec)
            else:
                routing = {
                    "organ_id": self.organ_id,
                    "agent_id": self.agent_id,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
                result = outcome(task, ok=True, output=value, routing=routing, spec=spec)
        finally:
            self._running.pop(task_id, None)
        self._record(result["ok"])
        return result

    async def run_batch(self, tasks: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
        """Run tasks concurrently, yielding the outcomes finished so far, as they finish."""
        pending = {asyncio.ensure_future(self.run(task)) for task in tasks}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                yield [job.result() for job in done]
        finally:
            for job in pending:
                job.cancel()

    def cancel(self, task_id: str) -> bool:
        """Stop a running task: set its context's flag and cancel its coroutine."""
        running = self._running.get(str(task_id))
        if running is None:
            return False
        ctx, job = running
        ctx.cancel()
        job.cancel()
        return True

    async def _call(self, spec: HandlerSpec, task: dict[str, Any], ctx: TaskContext) -> Any:
        params = task.get("params") or {}
        if spec.is_async:
            return await spec.func(params, ctx)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(SYNC_HANDLER_THREADS, thread_name_prefix="handler")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, spec.func, params, ctx)

    def _record(self, ok: bool) -> None:
        self.tasks_processed += 1
        if ok:
            self.successes += 1
        else:
            self.failures += 1
        self.capability += CAPABILITY_WEIGHT * ((1.0 if ok else 0.0) - self.capability)
        self.last_task_at = time.time()


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class LocalAgentClient:
    """An Agent called in-process: the manager's view of an agent, without Ray."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.agent_id = agent.agent_id
        self.alive = True

    async def run(self, task: dict[str, Any]) -> dict[str, Any]:
        self._check_alive()
        return await self.agent.run(task)

    async def run_batch(self, tasks: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
        self._check_alive()
        async for chunk in self.agent.run_batch(tasks):
            yield chunk

    async def cancel(self, task_id: str) -> bool:
        return self.alive and self.agent.cancel(task_id)

    async def state(self) -> dict[str, Any]:
        self._check_alive()
        return self.agent.state()

    async def kill(self) -> None:
        self.alive = False
        for task_id in list(self.agent._running):
            self.agent.cancel(task_id)

    def _check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError(f"agent {self.agent_id} is dead")
