"""The dispatcher loop against the real queue engine and a fake Coordinator (no Ray)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest
from django.db import connections

from organism.dispatcher import COORDINATOR_UNAVAILABLE, Dispatcher, DispatcherConfig, QueueStore
from organism.messages import (
    CoordinatorUnavailable,
    Outcome,
    OutcomeStatus,
    Routing,
    TaskPayload,
)
from tasks import queue, selectors
from tasks.models import Dispatcher as Heartbeat

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = DispatcherConfig(
    claim_batch=10,
    max_in_flight=20,
    lease_seconds=3.0,
    heartbeat_seconds=0.2,
    poll_seconds=0.05,
    grace_seconds=1.0,
    max_attempts=3,
    backoff_seconds=0.0,
    backoff_max_steps=10,
)


class FakeCoordinator:
    """Runs ``echo`` at once, ``fail`` raises, ``slow`` waits for ``release`` or a cancel."""

    def __init__(self, *, break_after: int | None = None):
        self.release = asyncio.Event()
        self.cancelled: list[str] = []
        self.break_after = break_after
        self._cancel_events: dict[str, asyncio.Event] = {}

    async def _one(self, task: TaskPayload) -> Outcome:
        if task.type == "fail":
            status = (
                OutcomeStatus.PERMANENT if task.params.get("permanent") else OutcomeStatus.ERROR
            )
            return Outcome.failure(task, status, "boom", max_attempts=task.params.get("cap"))
        if task.type == "slow":
            cancel = self._cancel_events.setdefault(task.id, asyncio.Event())
            waiters = [asyncio.ensure_future(e.wait()) for e in (self.release, cancel)]
            await asyncio.wait(waiters, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()
            if cancel.is_set():
                return Outcome.failure(task, OutcomeStatus.CANCELLED, "cancelled")
        return Outcome.success(task, task.params, Routing("fast", "fake", "fake-0", 0.0))

    async def run_chunks(self, tasks: list[TaskPayload]):
        pending = {asyncio.ensure_future(self._one(task)) for task in tasks}
        sent = 0
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                for finished in done:
                    if self.break_after is not None and sent >= self.break_after:
                        raise ConnectionError("actor died")
                    yield [finished.result()]
                    sent += 1
        finally:
            for task in pending:
                task.cancel()

    async def cancel(self, task_id: str) -> bool:
        self.cancelled.append(task_id)
        self._cancel_events.setdefault(task_id, asyncio.Event()).set()
        return True


async def poll_waker(timeout: float) -> None:
    await asyncio.sleep(timeout)


def make_dispatcher(coordinator, name="test_dispatcher/0001", config=CONFIG) -> Dispatcher:
    async def source():
        if isinstance(coordinator, Exception):
            raise coordinator
        return coordinator

    return Dispatcher(
        name,
        store=QueueStore(name, config),
        coordinator=source,
        waker=poll_waker,
        config=config,
    )


async def in_thread(fn, *args):
    """Run a sync check in a worker thread, closing that thread's connection afterwards."""

    def call():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


async def run_until(dispatcher: Dispatcher, done, timeout: float = 10.0):
    """Run the loop until ``done()`` (a sync check run in a thread) holds, then stop it."""
    loop_task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + timeout
    try:
        while not await in_thread(done):
            assert time.monotonic() < deadline, "condition not reached in time"
            assert not loop_task.done(), loop_task
            await asyncio.sleep(0.05)
    finally:
        dispatcher.stop()
        await loop_task
        await asyncio.to_thread(dispatcher.store.close)


def statuses(ids):
    return [selectors.get_task(task_id)["status"] for task_id in ids]


def test_echo_tasks_complete_with_output_and_heartbeat_then_forgotten():
    ids = queue.enqueue_many([{"type": "echo", "params": {"n": n}} for n in range(25)])
    dispatcher = make_dispatcher(FakeCoordinator())
    seen_heartbeat = []

    def done():
        seen_heartbeat.append(Heartbeat.objects.filter(name=dispatcher.identity).exists())
        return set(statuses(ids)) == {"COMPLETED"}

    asyncio.run(run_until(dispatcher, done))
    task = selectors.get_task(ids[3])
    assert task["result"]["output"] == {"n": 3}
    assert task["result"]["routing"]["path"] == "fast"
    assert task["locked_by"] == dispatcher.identity
    assert any(seen_heartbeat)
    assert not Heartbeat.objects.filter(name=dispatcher.identity).exists()
    assert dispatcher.stats.completed == 25


def test_failures_retry_until_the_handler_cap_and_permanent_fails_at_once():
    retried = queue.enqueue(type="fail", params={"cap": 2})["id"]
    permanent = queue.enqueue(type="fail", params={"permanent": True})["id"]
    dispatcher = make_dispatcher(FakeCoordinator())
    asyncio.run(run_until(dispatcher, lambda: statuses([retried, permanent]) == ["FAILED"] * 2))
    assert selectors.get_task(retried)["attempts"] == 2
    assert [e["outcome"] for e in selectors.get_task(retried)["error_history"]] == [
        "RETRY",
        "FAILED",
    ]
    assert selectors.get_task(permanent)["attempts"] == 1
    assert selectors.get_task(permanent)["error"] == "boom"


def test_each_outcome_is_written_without_waiting_for_the_slowest_of_its_batch():
    slow = queue.enqueue(type="slow")["id"]
    fast = queue.enqueue(type="echo", params={"x": 1})["id"]
    coordinator = FakeCoordinator()

    async def scenario():
        dispatcher = make_dispatcher(coordinator)
        loop_task = asyncio.create_task(dispatcher.run())
        deadline = time.monotonic() + 10
        while await in_thread(statuses, [fast, slow]) != ["COMPLETED", "RUNNING"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        coordinator.release.set()
        while await in_thread(statuses, [slow]) != ["COMPLETED"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        dispatcher.stop()
        await loop_task
        await asyncio.to_thread(dispatcher.store.close)

    asyncio.run(scenario())


def test_a_cancel_of_a_running_task_reaches_the_coordinator_and_ends_cancelled():
    task_id = queue.enqueue(type="slow")["id"]
    coordinator = FakeCoordinator()
    dispatcher = make_dispatcher(coordinator, config=_with(lease_seconds=0.6))

    def done():
        task = selectors.get_task(task_id)
        if task["status"] == "RUNNING" and not task["cancel_requested"]:
            queue.cancel(task_id)
        return task["status"] == "CANCELLED"

    asyncio.run(run_until(dispatcher, done))
    assert coordinator.cancelled == [task_id]


def test_a_dead_coordinator_sends_the_tasks_to_retry_and_the_loop_goes_on():
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(3)])
    dispatcher = make_dispatcher(FakeCoordinator(break_after=1), config=_with(backoff_seconds=60.0))
    asyncio.run(
        run_until(
            dispatcher, lambda: "RUNNING" not in statuses(ids) and "QUEUED" not in statuses(ids)
        )
    )
    rows = [selectors.get_task(task_id) for task_id in ids]
    assert sorted(r["status"] for r in rows) == ["COMPLETED", "RETRY", "RETRY"]
    assert {r["error"] for r in rows if r["status"] == "RETRY"} == {COORDINATOR_UNAVAILABLE}
    assert dispatcher.stats.coordinator_errors == 1


class UnsendableCoordinator(FakeCoordinator):
    """The call cannot even be sent (the claim thread sends it, before the loop sees it)."""

    def run_chunks(self, tasks: list[TaskPayload]):
        self.sent_from = threading.current_thread().name
        raise ConnectionError("actor handle gone")


def test_a_batch_that_cannot_be_sent_goes_to_retry_from_the_claim_thread():
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(2)])
    coordinator = UnsendableCoordinator()
    dispatcher = make_dispatcher(coordinator, config=_with(backoff_seconds=60.0))
    asyncio.run(run_until(dispatcher, lambda: set(statuses(ids)) == {"RETRY"}))
    assert coordinator.sent_from.startswith("seedcore-claim")
    assert {selectors.get_task(task_id)["error"] for task_id in ids} == {COORDINATOR_UNAVAILABLE}
    assert dispatcher.stats.coordinator_errors >= 1


def test_a_missing_coordinator_claims_nothing_and_never_kills_the_loop():
    task_id = queue.enqueue(type="echo")["id"]
    dispatcher = make_dispatcher(CoordinatorUnavailable("no actor"))
    started = time.monotonic()
    asyncio.run(run_until(dispatcher, lambda: time.monotonic() - started > 0.5))
    assert selectors.get_task(task_id)["status"] == "QUEUED"
    assert dispatcher.stats.coordinator_errors >= 3


def test_a_graceful_stop_releases_what_did_not_finish_within_the_grace_period():
    task_id = queue.enqueue(type="slow")["id"]
    dispatcher = make_dispatcher(FakeCoordinator(), config=_with(grace_seconds=0.2))
    asyncio.run(run_until(dispatcher, lambda: statuses([task_id]) == ["RUNNING"]))
    task = selectors.get_task(task_id)
    assert (task["status"], task["attempts"], task["locked_by"]) == ("QUEUED", 0, None)
    assert dispatcher.stats.released == 1


def test_a_task_reaped_meanwhile_is_dropped_and_its_late_outcome_is_stale():
    task_id = queue.enqueue(type="slow")["id"]
    coordinator = FakeCoordinator()
    dispatcher = make_dispatcher(coordinator, config=_with(lease_seconds=0.6))

    def done():
        task = selectors.get_task(task_id)
        if task["status"] == "RUNNING" and task["locked_by"] == dispatcher.identity:
            # Another dispatcher's reaper decides this one is dead.
            Heartbeat.objects.filter(name=dispatcher.identity).update(
                last_beat_at=datetime(2000, 1, 1, tzinfo=UTC)
            )
            queue.reap(heartbeat_timeout=1)
        return task_id in coordinator.cancelled

    asyncio.run(run_until(dispatcher, done))
    assert selectors.get_task(task_id)["status"] in ("RETRY", "QUEUED", "RUNNING")
    assert dispatcher.stats.completed == 0


def _with(**changes) -> DispatcherConfig:
    return DispatcherConfig(**{**CONFIG.as_dict(), **changes})


class FlakyCoordinator(FakeCoordinator):
    """``flaky`` fails its first attempt and echoes from the second on."""

    async def _one(self, task: TaskPayload) -> Outcome:
        if task.type == "flaky":
            task = TaskPayload(task.id, "fail" if task.attempt == 1 else "echo", task.attempt, {})
        return await super()._one(task)


class WriteReturnsAfterTheRetryIsClaimed(QueueStore):
    """Returns from a write that sent a task to RETRY only once the dispatcher has claimed
    that task's next attempt. Claims and writes run in threads of their own, so in production
    this happens whenever a retry falls due before the batch it was written in returns."""

    dispatcher: Dispatcher

    async def write(self, outcomes):
        statuses = await super().write(outcomes)
        retried = [o for o, status in zip(outcomes, statuses, strict=True) if status == "RETRY"]
        deadline = time.monotonic() + 5
        while retried and time.monotonic() < deadline:
            held = self.dispatcher._in_flight
            if all(o.task_id in held and held[o.task_id].attempt > o.attempt for o in retried):
                break
            await asyncio.sleep(0.01)
        return statuses


def test_a_retry_claimed_again_while_its_failure_is_written_still_completes():
    task_id = queue.enqueue(type="flaky")["id"]
    name = "test_dispatcher/0002"
    store = WriteReturnsAfterTheRetryIsClaimed(name, CONFIG)

    async def source():
        return FlakyCoordinator()

    dispatcher = Dispatcher(name, store=store, coordinator=source, waker=poll_waker, config=CONFIG)
    store.dispatcher = dispatcher

    # Before the fix the write's return dropped attempt 2 from the in-flight set: its outcome
    # was never written and the task stayed RUNNING until its lease ran out.
    asyncio.run(run_until(dispatcher, lambda: selectors.get_task(task_id)["status"] == "COMPLETED"))
    task = selectors.get_task(task_id)
    assert task["attempts"] == 2
    assert dispatcher.stats.retried == 1 and dispatcher.stats.completed == 1


class OneChunkCoordinator(FakeCoordinator):
    """Answers a whole batch in one chunk, so its outcomes are written as one batch; ``nan``
    returns a result the database refuses (as a handler could before the agent checked)."""

    async def _one(self, task: TaskPayload) -> Outcome:
        if task.type == "nan":
            return Outcome.success(task, float("nan"), Routing("fast", "fake", "fake-0", 0.0))
        return await super()._one(task)

    async def run_chunks(self, tasks: list[TaskPayload]):
        yield [await self._one(task) for task in tasks]


def test_one_outcome_the_database_refuses_holds_back_none_of_its_batch():
    good = queue.enqueue_many([{"type": "echo", "params": {"n": n}} for n in range(5)])
    failing = queue.enqueue(type="fail", params={"permanent": True})["id"]
    bad = queue.enqueue(type="nan")["id"]
    dispatcher = make_dispatcher(OneChunkCoordinator(), config=_with(lease_seconds=60.0))

    def written_and_counted() -> bool:
        # The batch's statuses are counted once its last write round is over (the bad outcome's
        # retries), so wait for the counts too: stopping earlier would release the bad task.
        stats = dispatcher.stats
        return statuses([*good, failing]) == ["COMPLETED"] * 5 + ["FAILED"] and (
            stats.completed,
            stats.failed,
            stats.stale,
        ) == (5, 1, 1)

    # Before the fix the batch failed three times and every task in it stayed RUNNING.
    asyncio.run(run_until(dispatcher, written_and_counted))
    assert selectors.get_task(good[2])["result"]["output"] == {"n": 2}
    assert selectors.get_task(bad)["status"] == "RUNNING"  # its lease runs out; the reaper
