"""The dispatcher loop: claim queued tasks, run them on the Coordinator, write each outcome.

Plain asyncio with injected collaborators, so it runs (and is tested) without Ray:

- a :class:`QueueStore` does the database work through ``tasks.queue`` in worker threads
  (the sync ORM never runs on the event loop);
- a *coordinator source* is an async callable returning a :class:`CoordinatorClient` (it looks
  the Coordinator up again after every failure, so a restarted Coordinator is found);
- a *waker* is an async callable that returns when a task may be claimable (a NOTIFY, see
  :class:`organism.waker.NotifyWaker`) or after the poll interval, the safety net.

It sends TaskPayloads and writes the Outcomes that come back (``organism.messages``);
``organism.ray.actors.DispatcherActor`` runs it in a Ray actor.

Each outcome is written as soon as it arrives; outcomes that arrive while a write is in
progress are written together (micro-batching), so no task waits for the slowest of its batch.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Protocol

from organism.circuit_breaker import CircuitBreaker, CircuitState
from organism.messages import CoordinatorUnavailable, Outcome, OutcomeStatus, TaskPayload
from organism.metrics import SYSTEM_FAILURES, HistogramSet, queue_wait_seconds
from organism.pacing import ClaimSizer

logger = logging.getLogger("seedcore.dispatcher")

COORDINATOR_UNAVAILABLE = "coordinator unavailable"
WRITE_BATCH_MAX = 500
WRITE_TRIES = 3


@dataclass(frozen=True)
class DispatcherConfig:
    """Tunables handed to each dispatcher actor as a plain dict (see :meth:`from_settings`)."""

    claim_batch: int | None = None  # None: sized to the backlog (organism.pacing)
    max_in_flight: int = 2000
    lease_seconds: float = 90.0
    heartbeat_seconds: float = 2.0
    poll_seconds: float = 1.0
    grace_seconds: float = 10.0
    max_attempts: int = 5
    backoff_seconds: float = 30.0
    backoff_max_steps: int = 10
    max_system_retries: int = 3
    # Consecutive Coordinator failures (look-ups or batches) that open the circuit, and how
    # long it stays open before a ping probes the Coordinator again.
    breaker_threshold: int = 5
    breaker_probe_seconds: float = 5.0
    # How many dispatchers share the queue: each NOTIFY of a new task wakes one of them
    # (organism.waker).
    dispatchers: int = 1

    @classmethod
    def from_settings(cls, **overrides: Any) -> DispatcherConfig:
        from django.conf import settings

        values = {
            "claim_batch": settings.SEEDCORE_CLAIM_BATCH,
            "max_in_flight": settings.SEEDCORE_MAX_IN_FLIGHT,
            "lease_seconds": settings.SEEDCORE_LEASE_SECONDS,
            "heartbeat_seconds": settings.SEEDCORE_HEARTBEAT_SECONDS,
            "poll_seconds": settings.SEEDCORE_POLL_SECONDS,
            "grace_seconds": settings.SEEDCORE_GRACE_SECONDS,
            "max_attempts": settings.SEEDCORE_MAX_ATTEMPTS,
            "backoff_seconds": settings.SEEDCORE_BACKOFF_SECONDS,
            "backoff_max_steps": settings.SEEDCORE_BACKOFF_MAX_STEPS,
            "max_system_retries": settings.SEEDCORE_MAX_SYSTEM_RETRIES,
            "breaker_threshold": settings.SEEDCORE_BREAKER_THRESHOLD,
            "breaker_probe_seconds": settings.SEEDCORE_BREAKER_PROBE_SECONDS,
            "dispatchers": settings.SEEDCORE_DISPATCHERS,
        }
        values.update(overrides)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CoordinatorClient(Protocol):
    """The Coordinator, as a dispatcher sees it (``organism.ray.clients.RayCoordinatorClient``).

    ``run_chunks`` may be called from the claim thread (it sends the tasks there and then); the
    iterator it returns is read on the event loop."""

    def run_chunks(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]: ...

    async def cancel(self, task_id: str) -> bool: ...


CoordinatorSource = Callable[[], Awaitable[CoordinatorClient]]
Waker = Callable[[float], Awaitable[object]]


@dataclass
class _Attempt:
    task_id: str
    attempt: int
    cancel_sent: bool = False
    type: str = ""
    dispatched_at: float = field(default_factory=time.monotonic)


@dataclass
class DispatcherStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    stale: int = 0
    released: int = 0
    coordinator_errors: int = 0
    circuit_opened: int = 0
    started_at: float = field(default_factory=time.time)


class QueueStore:
    """``tasks.queue`` for one dispatcher identity, each call run in a worker thread.

    Claims and heartbeats share one thread. Everything that updates this dispatcher's RUNNING
    rows (outcome writes, lease renewals, releases) shares another: run side by side, two
    such statements could lock the same rows in different orders and deadlock. Django
    connections are per thread, so each thread holds its own database connection.
    """

    def __init__(self, identity: str, config: DispatcherConfig, using: str = "default"):
        self.identity = identity
        self.config = config
        self.using = using
        self._control = ThreadPoolExecutor(1, thread_name_prefix="seedcore-claim")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="seedcore-write")

    async def _call(self, executor: ThreadPoolExecutor, fn: Callable[..., Any], **kwargs: Any):
        def run():
            from django.db import connections

            connection = connections[self.using]
            if connection.errors_occurred:
                # Only then: with health checks on, Django's check would cost every claim and
                # write a round trip of its own (SELECT 1).
                connection.close_if_unusable_or_obsolete()
            return fn(using=self.using, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(executor, run)

    async def claim(
        self, batch: int, then: Callable[[list[dict[str, Any]]], Any] | None = None
    ) -> tuple[list[dict[str, Any]], Any]:
        """Claim up to ``batch`` tasks: the rows, and what ``then(rows)`` answered. ``then`` runs
        in the claim thread as soon as a claim took rows, before the event loop hears of them."""
        from tasks import queue

        def claim_then(*, using: str) -> tuple[list[dict[str, Any]], Any]:
            rows = queue.claim(
                dispatcher=self.identity,
                batch=batch,
                lease_seconds=self.config.lease_seconds,
                durable=False,
                using=using,
            )
            return rows, (then(rows) if rows and then is not None else None)

        return await self._call(self._control, claim_then)

    async def renew(self, attempts: dict[str, int]) -> dict[str, bool]:
        from tasks import queue

        return await self._call(
            self._writes,
            queue.renew_leases,
            dispatcher=self.identity,
            attempts=attempts,
            lease_seconds=self.config.lease_seconds,
        )

    async def release(self, attempts: dict[str, int]) -> list[str]:
        from tasks import queue

        return await self._call(
            self._writes, queue.release, dispatcher=self.identity, attempts=attempts
        )

    async def beat(
        self, *, in_flight: int, processed: int, stats: dict[str, Any] | None = None
    ) -> None:
        from tasks import heartbeats

        await self._call(
            self._control,
            heartbeats.beat,
            name=self.identity,
            node=socket.gethostname(),
            pid=os.getpid(),
            in_flight=in_flight,
            processed=processed,
            stats=stats,
        )

    async def forget(self) -> None:
        from tasks import heartbeats

        await self._call(self._control, heartbeats.forget_dispatcher, name=self.identity)

    async def write(self, outcomes: list[Outcome]) -> list[str]:
        """Write many outcomes, each fenced by its attempt; returns the status each task ended
        in (or STALE), in order."""
        return await self._call(self._writes, self._write_sync, outcomes=outcomes)

    def _write_sync(self, *, outcomes: list[Outcome], using: str) -> list[str]:
        from django.db import transaction

        # All or nothing, so a batch that fails half way can be written again, one by one.
        with transaction.atomic(using=using):
            return self._write_batch(outcomes, using)

    def _write_batch(self, outcomes: list[Outcome], using: str) -> list[str]:
        from tasks import queue
        from tasks.policy import RetryPolicy

        # Each attempt's run (where it ran, what it logged) is written by the same statement
        # as its outcome.
        done = [(o.task_id, o.attempt, o.result, o.run_record()) for o in outcomes if o.ok]
        written = queue.complete_many(dispatcher=self.identity, results=done, using=using)
        policy = RetryPolicy(
            self.config.max_attempts,
            self.config.backoff_seconds,
            self.config.backoff_max_steps,
            self.config.max_system_retries,
        )
        statuses = []
        for outcome in outcomes:
            if outcome.ok:
                statuses.append(written.get(outcome.task_id, queue.STALE))
                continue
            statuses.append(
                queue.fail(
                    task_id=outcome.task_id,
                    dispatcher=self.identity,
                    attempt=outcome.attempt,
                    error=outcome.error or outcome.status.value,
                    traceback=outcome.traceback or "",
                    permanent=outcome.permanent,
                    max_attempts=outcome.max_attempts,
                    policy=policy,
                    run=outcome.run_record(),
                    system=outcome.kind if outcome.system else None,
                    using=using,
                )
            )
        return statuses

    def close(self) -> None:
        for executor in (self._control, self._writes):
            executor.submit(_close_thread_connections)
            executor.shutdown(wait=True)


def _close_thread_connections() -> None:
    from django.db import connections

    connections.close_all()


def _send(
    coordinator: CoordinatorClient, rows: list[dict[str, Any]]
) -> tuple[list[TaskPayload], AsyncIterator[list[Outcome]] | Exception]:
    """Run in the claim thread the moment a claim returns: the claimed tasks go to the
    Coordinator from there, rather than after a hop back to the event loop (0.2–0.3 ms of a
    4 ms start at low load). It makes and sends the message only; the dispatcher's own state
    stays the event loop's, which records the attempts before it reads any outcome."""
    tasks = [TaskPayload.from_claim(row) for row in rows]
    try:
        return tasks, coordinator.run_chunks(tasks)
    except Exception as exc:  # not even sent: the batch fails as a failed call would
        return tasks, exc


class Dispatcher:
    """One dispatcher: ``await run()`` until :meth:`stop` is called."""

    def __init__(
        self,
        identity: str,
        *,
        store: QueueStore,
        coordinator: CoordinatorSource,
        waker: Waker,
        config: DispatcherConfig,
    ):
        self.identity = identity
        self.store = store
        self.config = config
        self._coordinator_source = coordinator
        self._waker = waker
        self._coordinator: CoordinatorClient | None = None
        self._in_flight: dict[str, _Attempt] = {}
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._batches: set[asyncio.Task] = set()
        self.stats = DispatcherStats()
        self.sizer = ClaimSizer(config.claim_batch)
        # SYSTEM failures written (attempts Ray lost), by kind.
        self.system_failures: Counter[str] = Counter()
        self.histograms = HistogramSet()
        self.breaker = CircuitBreaker(
            threshold=config.breaker_threshold, probe_seconds=config.breaker_probe_seconds
        )
        self.running = False

    # -- public ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "running": self.running,
            "in_flight": len(self._in_flight),
            "processed": self.processed,
            "circuit": self.breaker.state.value,
            **asdict(self.stats),
        }

    def stats_document(self) -> dict[str, Any]:
        """What each heartbeat persists for /metrics (see ``tasks.heartbeats.merge_stats``)."""
        self.stats.circuit_opened = self.breaker.opened_total
        counters = asdict(self.stats)
        counters.pop("started_at")
        for kind, count in self.system_failures.items():
            counters[f"{SYSTEM_FAILURES}{kind}"] = count
        return {
            "counters": counters,
            # A copy: the heartbeat serialises it in a worker thread while the loop records.
            "histograms": copy.deepcopy(self.histograms.data),
            "circuit": self.breaker.state.value,
        }

    @property
    def processed(self) -> int:
        s = self.stats
        return s.completed + s.failed + s.retried + s.cancelled

    async def run(self) -> None:
        """Claim and run tasks until :meth:`stop`; then drain, release and forget."""
        self.running = True
        # The first heartbeat comes before the first claim: the reaper treats RUNNING tasks of a
        # dispatcher without a heartbeat row as orphans.
        await self._guarded("heartbeat", self._beat)
        helpers = [
            asyncio.create_task(self._every(self.config.heartbeat_seconds, self._beat)),
            asyncio.create_task(self._every(self.config.lease_seconds / 3, self._renew)),
            asyncio.create_task(self._writer()),
        ]
        try:
            await self._claim_loop()
            await self._drain(self.config.grace_seconds)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush_outcomes()
            await self._release_remaining()
            await self._guarded("forget heartbeat", self.store.forget)
            self.running = False

    def stop(self) -> None:
        """Stop claiming; :meth:`run` then lets in-flight tasks finish within the grace period."""
        self._stopping.set()

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            in_flight = len(self._in_flight)
            wanted = self.sizer.wanted(self.config.max_in_flight - in_flight, in_flight)
            if wanted <= 0:
                self._slot_freed.clear()
                await self._until_stopping(self._slot_freed.wait(), None)
                continue
            if not self.breaker.allows_calls():
                await self._wait_for_circuit()
                continue
            try:
                coordinator = await self._get_coordinator()
            except CoordinatorUnavailable:
                await self._until_stopping(asyncio.sleep(self.config.poll_seconds), None)
                continue
            try:
                rows, sent = await self.store.claim(wanted, partial(_send, coordinator))
            except Exception:
                logger.exception("%s: claim failed", self.identity)
                await self._until_stopping(asyncio.sleep(self.config.poll_seconds), None)
                continue
            self.sizer.claimed(wanted, len(rows))
            if rows:
                self.stats.claimed += len(rows)
                tasks, chunks = sent
                for row, task in zip(rows, tasks, strict=True):
                    self._in_flight[task.id] = _Attempt(task.id, task.attempt, type=task.type)
                    wait = queue_wait_seconds(row)
                    if wait is not None:
                        self.histograms.observe("queue_wait_seconds", task.type, wait)
                batch = asyncio.create_task(self._run_batch(coordinator, tasks, chunks))
                self._batches.add(batch)
                batch.add_done_callback(self._batches.discard)
            if len(rows) < wanted:
                # The queue looks empty: sleep until a NOTIFY (or the poll interval).
                await self._until_stopping(self._waker(self.config.poll_seconds), None)

    async def _get_coordinator(self) -> CoordinatorClient:
        if self._coordinator is None:
            try:
                self._coordinator = await self._coordinator_source()
            except Exception as exc:
                self.stats.coordinator_errors += 1
                self._breaker_failure()
                raise CoordinatorUnavailable(str(exc)) from exc
        return self._coordinator

    async def _wait_for_circuit(self) -> None:
        """The circuit is open: claim nothing; once it is half-open, probe the Coordinator
        (a fresh look-up pings it) and close the circuit if it answers."""
        if not self.breaker.should_probe():
            await self._until_stopping(asyncio.sleep(self.breaker.seconds_until_probe()), None)
            return
        self._coordinator = None
        try:
            await self._get_coordinator()
        except CoordinatorUnavailable:
            logger.warning("%s: Coordinator probe failed; circuit stays open", self.identity)
            return
        self.breaker.record_success()
        logger.warning("%s: Coordinator answers again; circuit closed", self.identity)

    def _breaker_failure(self) -> None:
        was = self.breaker.state
        self.breaker.record_failure()
        if was is CircuitState.CLOSED and self.breaker.state is CircuitState.OPEN:
            logger.warning(
                "%s: %d consecutive Coordinator failures; circuit open, claiming stops and "
                "a probe follows every %g s",
                self.identity,
                self.breaker.threshold,
                self.breaker.probe_seconds,
            )

    async def _run_batch(
        self,
        coordinator: CoordinatorClient,
        tasks: list[TaskPayload],
        chunks: AsyncIterator[list[Outcome]] | Exception,
    ) -> None:
        pending = {task.id: task for task in tasks}
        try:
            if isinstance(chunks, Exception):
                raise chunks
            async for chunk in chunks:
                for outcome in chunk:
                    if pending.pop(outcome.task_id, None) is not None:
                        self._outcomes.put_nowait(outcome)
        except Exception as exc:
            logger.warning("%s: coordinator call failed: %s", self.identity, exc)
            self.stats.coordinator_errors += 1
            self._breaker_failure()
            if self._coordinator is coordinator:
                self._coordinator = None
        else:
            self.breaker.record_success()
        for task in pending.values():
            # The Coordinator died or never answered for these: retry them later.
            self._outcomes.put_nowait(
                Outcome.failure(task, OutcomeStatus.UNAVAILABLE, COORDINATOR_UNAVAILABLE)
            )

    # -- writing outcomes --------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            outcomes = [await self._outcomes.get()]
            while len(outcomes) < WRITE_BATCH_MAX and not self._outcomes.empty():
                outcomes.append(self._outcomes.get_nowait())
            await self._write(outcomes)

    async def _flush_outcomes(self) -> None:
        outcomes = []
        while not self._outcomes.empty():
            outcomes.append(self._outcomes.get_nowait())
        if outcomes:
            await self._write(outcomes)

    def _holds(self, outcome: Outcome) -> bool:
        """Whether the attempt an outcome belongs to is still this dispatcher's to write."""
        attempt = self._in_flight.get(outcome.task_id)
        return attempt is not None and attempt.attempt == outcome.attempt

    async def _write(self, outcomes: list[Outcome]) -> None:
        from tasks.queue import STALE

        # By attempt, not just by task: the claim thread runs beside the write thread, so a
        # retry written early in a batch may already be claimed again, by this dispatcher too,
        # before the batch returns. That newer attempt must stay in flight (renewed, and its
        # own outcome written), and an older attempt's outcome must never be fenced with it.
        held = [o for o in outcomes if self._holds(o)]
        statuses = await self._write_tried(held)
        now = time.monotonic()
        for outcome, status in zip(held, statuses, strict=True):
            self._count(status)
            if outcome.system and status is not None and status != STALE:
                self.system_failures[outcome.kind or "unknown"] += 1
            if not self._holds(outcome):
                continue  # its next attempt was claimed while this one was written
            attempt = self._in_flight.pop(outcome.task_id)
            if status is not None and status != STALE:
                self.histograms.observe("run_seconds", attempt.type, now - attempt.dispatched_at)
        self._slot_freed.set()

    async def _write_tried(self, outcomes: list[Outcome]) -> list[str | None]:
        """Write outcomes as one batch; if the batch fails, one by one, so an outcome the
        database refuses holds back none of the others. None: not written.

        Fenced writes are safe to repeat (a batch is one transaction), so the unwritten are
        tried again, up to WRITE_TRIES rounds. If they keep failing, their rows stay RUNNING
        until their lease runs out, and the reaper retries them.
        """
        statuses: list[str | None] = [None] * len(outcomes)
        if not outcomes:
            return statuses
        try:
            return await self.store.write(outcomes)
        except Exception:
            logger.exception("%s: writing %d outcomes failed", self.identity, len(outcomes))
        rounds = WRITE_TRIES - 1 if len(outcomes) == 1 else WRITE_TRIES
        for attempt in range(rounds):
            if len(outcomes) == 1 or attempt:  # a batch goes one by one at once
                await asyncio.sleep(0.2 * (attempt + 1))
            for index, outcome in enumerate(outcomes):
                if statuses[index] is not None:
                    continue
                try:
                    statuses[index] = (await self.store.write([outcome]))[0]
                except Exception as exc:
                    logger.warning(
                        "%s: writing the outcome of %s failed: %s",
                        self.identity,
                        outcome.task_id,
                        exc,
                    )
            if None not in statuses:
                break
        return statuses

    def _count(self, status: str | None) -> None:
        """Count the status an outcome's write ended its task in; STALE and None (a write
        that failed: the reaper will retry the task) count as stale."""
        if status == "COMPLETED":
            self.stats.completed += 1
        elif status == "FAILED":
            self.stats.failed += 1
        elif status == "RETRY":
            self.stats.retried += 1
        elif status == "CANCELLED":
            self.stats.cancelled += 1
        else:
            self.stats.stale += 1

    # -- leases, cancels, heartbeats ---------------------------------------------------------

    async def _renew(self) -> None:
        snapshot = {a.task_id: a.attempt for a in self._in_flight.values()}
        if not snapshot:
            return
        held = await self.store.renew(snapshot)
        for task_id in snapshot:
            attempt = self._in_flight.get(task_id)
            if attempt is None or attempt.attempt != snapshot[task_id]:
                continue
            if task_id not in held:
                # Reaped or released elsewhere: whatever this attempt returns would be stale.
                self._in_flight.pop(task_id, None)
                self._slot_freed.set()
                await self._send_cancel(attempt)
            elif held[task_id]:
                await self._send_cancel(attempt)

    async def _send_cancel(self, attempt: _Attempt) -> None:
        if attempt.cancel_sent or self._coordinator is None:
            return
        attempt.cancel_sent = True
        try:
            await self._coordinator.cancel(attempt.task_id)
        except Exception as exc:
            logger.warning("%s: cancel of %s failed: %s", self.identity, attempt.task_id, exc)

    async def _beat(self) -> None:
        await self.store.beat(
            in_flight=len(self._in_flight), processed=self.processed, stats=self.stats_document()
        )

    # -- stopping ----------------------------------------------------------------------------

    async def _drain(self, grace: float) -> None:
        # In-flight entries leave only once their outcome is written.
        deadline = time.monotonic() + grace
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _release_remaining(self) -> None:
        for batch in list(self._batches):
            batch.cancel()
        attempts = {a.task_id: a.attempt for a in self._in_flight.values()}
        if attempts:
            for attempt in list(self._in_flight.values()):
                await self._send_cancel(attempt)
            released = await self._guarded("release", self.store.release, attempts) or []
            self.stats.released += len(released)
        self._in_flight.clear()

    # -- helpers -----------------------------------------------------------------------------

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._guarded(step.__name__, step)

    async def _guarded(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        # One failing step (a database blip) must never end the loop.
        try:
            return await fn(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: %s failed", self.identity, what)
            return None

    async def _until_stopping(self, awaitable: Awaitable[Any], timeout: float | None) -> None:
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            stopper.cancel()
