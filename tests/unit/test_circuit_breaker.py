"""The circuit breaker: its states and timing with an injected clock (pure), then inside the
dispatcher loop against the real queue engine and a fake Coordinator (no Ray)."""

import asyncio
import time

import pytest
from django.db import connections

from organism.circuit_breaker import CircuitBreaker, CircuitState
from organism.dispatcher import Dispatcher, DispatcherConfig, QueueStore
from organism.messages import Outcome, Routing
from tasks import queue, selectors
from tasks.models import Dispatcher as Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, probe: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(threshold=threshold, probe_seconds=probe, clock=clock), clock


def test_it_stays_closed_below_the_threshold_and_a_success_resets_the_count():
    breaker, _ = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allows_calls()
    assert breaker.consecutive_failures == 2


def test_consecutive_failures_at_the_threshold_open_it():
    breaker, _ = make(threshold=3)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allows_calls()
    assert not breaker.should_probe()
    assert breaker.opened_total == 1
    assert breaker.seconds_until_probe() == pytest.approx(10.0)


def test_it_turns_half_open_once_the_probe_interval_has_passed():
    breaker, clock = make(threshold=1, probe=10.0)
    breaker.record_failure()
    clock.now += 9.5
    assert breaker.state is CircuitState.OPEN
    assert breaker.seconds_until_probe() == pytest.approx(0.5)
    clock.now += 0.5
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.should_probe()
    assert not breaker.allows_calls()


def test_a_successful_probe_closes_it():
    breaker, clock = make(threshold=1)
    breaker.record_failure()
    clock.now += 10
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allows_calls()
    assert breaker.consecutive_failures == 0


def test_a_failed_probe_opens_it_again_for_another_interval():
    breaker, clock = make(threshold=5, probe=10.0)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 10
    assert breaker.should_probe()
    breaker.record_failure()  # one failure is enough while half-open
    assert breaker.state is CircuitState.OPEN
    assert breaker.opened_total == 2
    clock.now += 9
    assert breaker.state is CircuitState.OPEN
    clock.now += 1
    assert breaker.state is CircuitState.HALF_OPEN


def test_failures_while_open_do_not_extend_the_interval():
    breaker, clock = make(threshold=1, probe=10.0)
    breaker.record_failure()
    clock.now += 5
    breaker.record_failure()  # a late failure of a batch sent before it opened
    assert breaker.opened_total == 1
    assert breaker.seconds_until_probe() == pytest.approx(5.0)


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"probe_seconds": -1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


# ---------------------------------------------------------------------------------------------
# The dispatcher with its breaker (real queue engine, fake Coordinator, no Ray)


class EchoCoordinator:
    def __init__(self, *, broken: bool = False):
        self.broken = broken
        self.batches = 0

    async def run_chunks(self, tasks):
        self.batches += 1
        if self.broken:
            raise ConnectionError("actor died")
        yield [
            Outcome.success(task, {"echo": True}, Routing("fast", None, None, 0.0))
            for task in tasks
        ]

    async def cancel(self, task_id):
        return False


class FlakySource:
    """The Coordinator look-up: fails while ``up`` is False; counts look-ups."""

    def __init__(self, coordinator, *, up: bool):
        self.coordinator = coordinator
        self.up = up
        self.lookups = 0

    async def __call__(self):
        self.lookups += 1
        if not self.up:
            raise ConnectionError("no Coordinator actor")
        return self.coordinator


BREAKER_CONFIG = DispatcherConfig(
    claim_batch=5,
    max_in_flight=20,
    lease_seconds=5.0,
    heartbeat_seconds=0.05,
    poll_seconds=0.02,
    grace_seconds=1.0,
    max_attempts=10,
    backoff_seconds=0.0,
    breaker_threshold=3,
    breaker_probe_seconds=1.0,
)


def make_dispatcher(source, name: str) -> Dispatcher:
    async def waker(timeout: float) -> None:
        await asyncio.sleep(timeout)

    return Dispatcher(
        name,
        store=QueueStore(name, BREAKER_CONFIG),
        coordinator=source,
        waker=waker,
        config=BREAKER_CONFIG,
    )


async def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_closing(check)):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _closing(check):
    def run():
        try:
            return check()
        finally:
            connections.close_all()

    return run


async def db(read):
    """Run a sync read in a worker thread (the ORM never runs on the event loop)."""
    return await asyncio.to_thread(_closing(read))


def rows(ids):
    return [selectors.get_task(task_id) for task_id in ids]


@pytest.mark.django_db(transaction=True)
def test_an_absent_coordinator_opens_the_circuit_then_a_probe_closes_it():
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(5)])
    source = FlakySource(EchoCoordinator(), up=False)
    dispatcher = make_dispatcher(source, "breaker/absent")

    async def scenario():
        loop = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: dispatcher.breaker.state is CircuitState.OPEN)
            assert source.lookups == 3
            # Open: nothing claimed, nothing looked up, and the heartbeat says so.
            await until(
                lambda: Heartbeat.objects.get(name="breaker/absent").stats["circuit"] == "open"
            )
            assert source.lookups == 3
            tasks = await db(lambda: rows(ids))
            assert {(r["status"], r["attempts"]) for r in tasks} == {("QUEUED", 0)}
            assert dispatcher.status()["circuit"] == "open"
            # Half-open: one probe, which fails, opens it again.
            await until(lambda: source.lookups == 4)
            assert dispatcher.breaker.state is CircuitState.OPEN
            assert dispatcher.breaker.opened_total == 2
            # The Coordinator is back: the next probe closes the circuit and work resumes.
            source.up = True
            await until(lambda: {r["status"] for r in rows(ids)} == {"COMPLETED"})
            assert dispatcher.breaker.state is CircuitState.CLOSED
            assert {r["attempts"] for r in await db(lambda: rows(ids))} == {1}
            assert dispatcher.stats_document()["counters"]["circuit_opened"] == 2
        finally:
            dispatcher.stop()
            await loop
            await asyncio.to_thread(dispatcher.store.close)

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_failing_batches_open_the_circuit_before_a_retry_storm_burns_the_attempts():
    (task_id,) = queue.enqueue_many([{"type": "echo"}])
    coordinator = EchoCoordinator(broken=True)  # found and pinged, but every batch fails
    dispatcher = make_dispatcher(FlakySource(coordinator, up=True), "breaker/storm")

    async def scenario():
        loop = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: dispatcher.breaker.state is CircuitState.OPEN)
            await asyncio.sleep(0.3)  # well within the probe interval
            task = await db(lambda: selectors.get_task(task_id))
            # Backoff is 0 and 10 attempts are allowed: without the breaker the task would
            # be claimed again and again until FAILED.
            assert (task["status"], task["attempts"]) == ("RETRY", 3)
            assert coordinator.batches == 3
            # The probe (a ping) succeeds, the circuit closes, and the storm is capped again.
            coordinator.broken = False
            await until(lambda: selectors.get_task(task_id)["status"] == "COMPLETED")
            assert (await db(lambda: selectors.get_task(task_id)))["attempts"] == 4
        finally:
            dispatcher.stop()
            await loop
            await asyncio.to_thread(dispatcher.store.close)

    asyncio.run(scenario())
