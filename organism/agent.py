"""An agent: runs task handlers and keeps its own record. Plain Python; organism.ray wraps it.

:func:`run_handler` is the one place a handler call becomes an :class:`Outcome`: agents use it
for the task types they run, and the OrganismManager for the control types it runs itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from organism import capture
from organism.handlers import (
    HandlerSpec,
    PermanentError,
    TaskCancelled,
    TaskContext,
    get_handler,
    missing_handler_message,
)
from organism.messages import (
    ActorUnavailable,
    Outcome,
    OutcomeStatus,
    Placement,
    Routing,
    Run,
    TaskPayload,
    json_problem,
)

CAPABILITY_WEIGHT = 0.1  # how much one task moves the moving average of success
# Sync handlers run in threads; the default executor (cores + 4) would let a few slow ones
# hold up every other sync task of the agent.
SYNC_HANDLER_THREADS = 64
CHUNK_SECONDS = 0.002  # see ChunkPace


async def run_handler(
    task: TaskPayload,
    spec: HandlerSpec,
    ctx: TaskContext,
    job: asyncio.Future,
    *,
    timeout: float,
    organ_id: str | None,
    agent_id: str | None,
) -> Outcome:
    """Wait up to ``timeout`` for ``job``, a started call of ``spec``'s handler, and say how it
    ended. Its routing has no path yet: the manager, which chose it, sets that.

    A cancel of the task (:func:`stop` on its context and job) is an outcome, CANCELLED; a
    cancel of the caller stops the handler and propagates.
    """
    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.shield(job), timeout)
    except TimeoutError:
        stop(ctx, job)
        return timed_out(task, spec, timeout)
    except asyncio.CancelledError:
        if not ctx.is_cancelled():  # our caller was cancelled: stop the handler too
            stop(ctx, job)
            raise
    except Exception:
        pass  # settle() reads it from the job
    return settle(task, spec, ctx, job, started=started, organ_id=organ_id, agent_id=agent_id)


def settle(
    task: TaskPayload,
    spec: HandlerSpec,
    ctx: TaskContext,
    job: asyncio.Future,
    *,
    started: float,
    organ_id: str | None,
    agent_id: str | None,
) -> Outcome:
    """The outcome of ``job``, a finished call of ``spec``'s handler started at ``started``
    (``time.perf_counter()``)."""
    cap = spec.max_attempts
    if ctx.is_cancelled() or job.cancelled():
        return Outcome.failure(task, OutcomeStatus.CANCELLED, "cancelled", max_attempts=cap)
    exc = job.exception()
    if exc is not None:
        if isinstance(exc, TaskCancelled):
            return Outcome.failure(task, OutcomeStatus.CANCELLED, "cancelled", max_attempts=cap)
        status = OutcomeStatus.PERMANENT if isinstance(exc, PermanentError) else OutcomeStatus.ERROR
        return Outcome.failure(
            task,
            status,
            f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            max_attempts=cap,
        )
    value = job.result()
    problem = json_problem(value)
    if problem is not None:
        # Checked here, not at the write: a batch of outcomes is one statement, and one value
        # the database refuses would fail every task written with it.
        error = f"the handler's result cannot be stored as JSON: {problem}"
        return Outcome.failure(task, OutcomeStatus.PERMANENT, error, max_attempts=cap)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return Outcome.success(task, value, Routing(None, organ_id, agent_id, duration_ms))


def timed_out(task: TaskPayload, spec: HandlerSpec, timeout: float) -> Outcome:
    error = f"timed out after {timeout:g} s"
    return Outcome.failure(task, OutcomeStatus.TIMED_OUT, error, max_attempts=spec.max_attempts)


class ChunkPace:
    """At most one chunk of outcomes per :data:`CHUNK_SECONDS` on a stream, the first at once.

    Every chunk is a message across Ray, which costs both ends the same for one outcome as for
    hundreds: handlers finishing a little apart (a batch of 20 ms sleeps) would otherwise
    send a message each. A start is never delayed, only the report of an end, by at most this.
    """

    def __init__(self):
        self._last: float | None = None

    async def wait(self, *, ready: int, remaining: int) -> None:
        loop = asyncio.get_running_loop()
        if self._last is not None and ready < remaining:
            gap = CHUNK_SECONDS - (loop.time() - self._last)
            if gap > 0:
                await asyncio.sleep(gap)
        self._last = loop.time()


def stop(ctx: TaskContext, job: asyncio.Future) -> None:
    """Stop a running handler: set its context's flag and cancel its coroutine."""
    ctx.cancel()
    job.cancel()


class Agent:
    """Runs tasks; each outcome carries its :class:`Run`: the agent's ``placement`` (where its
    process runs, given once; without Ray only the pid is known), the attempt's start and
    end, and what its handler logged (:mod:`organism.capture`)."""

    def __init__(
        self,
        agent_id: str,
        organ_id: str,
        *,
        default_timeout: float = 300.0,
        placement: Placement | None = None,
    ):
        self.agent_id = agent_id
        self.organ_id = organ_id
        self.default_timeout = default_timeout
        self.placement = placement or Placement(None, None, os.getpid(), None, organ_id)
        self.tasks_processed = 0
        self.successes = 0
        self.failures = 0
        self.capability = 1.0
        self.last_task_at: float | None = None
        self._running: dict[str, tuple[TaskContext, asyncio.Future]] = {}
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
            "placement": list(self.placement),
        }

    async def run(self, task: TaskPayload) -> Outcome:
        """Run one task to its outcome; never raises (but a cancel of the caller propagates)."""
        async for chunk in self.run_batch([task]):
            return chunk[0]
        raise AssertionError("run_batch yielded nothing")  # pragma: no cover

    async def run_batch(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]:
        """Run tasks concurrently, yielding the outcomes finished so far, as they finish.

        Each task costs one asyncio task (its handler's) and one timer: the outcome is made
        in the handler's done callback, so the many tasks of a batch share this one waiting
        generator rather than each having a coroutine of its own awaiting it.
        """
        finished: list[Outcome] = []
        ready = asyncio.Event()

        def deliver(outcome: Outcome) -> None:
            self._record(outcome.ok)
            finished.append(outcome)
            ready.set()

        # Looked up once per batch: each lookup is a getpid() system call, which was a tenth
        # of an agent's CPU when done twice per task.
        loop = asyncio.get_running_loop()
        started = [self._start(task, deliver, loop) for task in tasks]
        remaining = len(tasks)
        pace = ChunkPace()
        try:
            while remaining:
                await ready.wait()
                await pace.wait(ready=len(finished), remaining=remaining)
                ready.clear()
                chunk = finished[:]
                finished.clear()
                remaining -= len(chunk)
                yield chunk
        finally:
            for run in started:  # our caller went away: stop what still runs
                if run is not None and not run.delivered:
                    run.abandon()

    def _start(
        self,
        task: TaskPayload,
        deliver: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> _Run | None:
        spec = get_handler(task.type)
        if spec is None or spec.control:
            reason = missing_handler_message(task.type)
            if spec is not None:
                reason = f"control type '{spec.type}' runs on the Coordinator, not on an agent"
            deliver(Outcome.failure(task, OutcomeStatus.PERMANENT, reason))
            return None
        run = _Run(self, task, spec, deliver, loop)
        self._running[task.id] = (run.ctx, run.job)
        return run

    def _launch(
        self,
        spec: HandlerSpec,
        params: dict[str, Any],
        ctx: TaskContext,
        loop: asyncio.AbstractEventLoop,
    ):
        if spec.is_async:
            return loop.create_task(spec.func(params, ctx))
        if self._threads is None:
            self._threads = ThreadPoolExecutor(SYNC_HANDLER_THREADS, thread_name_prefix="handler")
        # run_in_executor does not carry the context over (create_task does): the thread gets
        # a copy of this one, so what the handler logs reaches its attempt's buffer.
        context = contextvars.copy_context()
        return loop.run_in_executor(self._threads, context.run, spec.func, params, ctx)

    def cancel(self, task_id: str) -> bool:
        """Stop a running task; True if it was running here."""
        running = self._running.get(task_id)
        if running is None:
            return False
        stop(*running)
        return True

    def _record(self, ok: bool) -> None:
        self.tasks_processed += 1
        if ok:
            self.successes += 1
        else:
            self.failures += 1
        self.capability += CAPABILITY_WEIGHT * ((1.0 if ok else 0.0) - self.capability)
        self.last_task_at = time.time()


class _Run:
    """One task running on an agent: its handler's job, its timeout, its log, and its one
    delivery, whose outcome carries the attempt's :class:`Run`."""

    __slots__ = (
        "agent",
        "task",
        "spec",
        "ctx",
        "job",
        "timer",
        "started",
        "began_at",
        "log",
        "deliver",
        "delivered",
    )

    def __init__(
        self,
        agent: Agent,
        task: TaskPayload,
        spec: HandlerSpec,
        deliver: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ):
        self.agent, self.task, self.spec, self.deliver = agent, task, spec, deliver
        self.delivered = False
        self.ctx = TaskContext(task_id=task.id, attempt=task.attempt)
        self.log = capture.LogBuffer()
        self.began_at = time.time()
        self.started = time.perf_counter()
        # The job copies this context as it is made: the buffer is its attempt's.
        token = capture.current.set(self.log)
        try:
            self.job = agent._launch(spec, task.params, self.ctx, loop)
        finally:
            capture.current.reset(token)
        timeout = spec.timeout or agent.default_timeout
        self.timer = loop.call_later(timeout, self._time_out, timeout)
        self.job.add_done_callback(self._done)

    def _done(self, job: asyncio.Future) -> None:
        if self.delivered:
            return
        agent = self.agent
        self._finish(
            settle(
                self.task,
                self.spec,
                self.ctx,
                job,
                started=self.started,
                organ_id=agent.organ_id,
                agent_id=agent.agent_id,
            )
        )

    def _time_out(self, timeout: float) -> None:
        # Answered at once, as a handler that ignores its cancel may run on for a while.
        stop(self.ctx, self.job)
        self._finish(timed_out(self.task, self.spec, timeout))

    def _finish(self, outcome: Outcome) -> None:
        self.delivered = True
        self.timer.cancel()
        agent = self.agent
        agent._running.pop(self.task.id, None)
        outcome.run = Run(agent.placement, self.began_at, time.time(), self.log.text())
        self.deliver(outcome)

    def abandon(self) -> None:
        self.delivered = True
        self.timer.cancel()
        self.agent._running.pop(self.task.id, None)
        stop(self.ctx, self.job)


class LocalAgentClient:
    """An Agent called in-process: the manager's view of an agent, without Ray."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.agent_id = agent.agent_id
        self.alive = True

    async def run(self, task: TaskPayload) -> Outcome:
        self._check_alive()
        outcome = await self.agent.run(task)
        self._check_alive()  # killed meanwhile: no answer, as from a dead actor
        return outcome

    async def run_batch(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]:
        self._check_alive()
        async for chunk in self.agent.run_batch(tasks):
            self._check_alive()
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

    @property
    def placement(self) -> Placement:
        return self.agent.placement

    def _check_alive(self) -> None:
        if not self.alive:
            raise ActorUnavailable(f"agent {self.agent_id} is dead", kind="actor_died")
