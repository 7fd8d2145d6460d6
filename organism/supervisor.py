"""What ``manage.py rundispatcher`` runs: bootstrap the Ray side, supervise it, reap, stop.

:class:`Supervisor` connects to Ray, makes sure the Coordinator answers and the N dispatcher
actors run their loops (reusing live ones, never duplicating them), then every few seconds
pings every actor, restarts the dead, reaps orphaned tasks, hands the Coordinator the backlog
per task type so the organs scale (recording the types no agent can take now where the claim
skips them: ``tasks.queue.set_waiting_for``), publishes the Coordinator's health and the
organism for the web (``organism.status``) and reports one status line. Everything here
is sync and runs in the command's process; its calls to the actors go through ``organism.ray``
(``actors`` finds and creates them, ``driver`` calls them), so this module never touches Ray
itself. Errors an operator can fix are raised as :class:`SupervisorError` with a message
saying what to do.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from organism.dispatcher import DispatcherConfig
from tasks.models import STATUS_ORDER
from tasks.policy import RetentionPolicy

PING_TIMEOUT = 10.0
SUMMARY_TIMEOUT = 15.0  # a scaling round may create or stop agents
COORDINATOR_READY_TIMEOUT = 120.0


class SupervisorError(Exception):
    """A problem the operator can fix; the message says how."""


DEAD_DISPATCHER_FORGET_SECONDS = 600.0


@dataclass
class SupervisorOptions:
    dispatchers: int = field(default_factory=lambda: settings.SEEDCORE_DISPATCHERS)
    address: str = field(default_factory=lambda: settings.RAY_ADDRESS)
    namespace: str = field(default_factory=lambda: settings.RAY_NAMESPACE)
    interval: float = field(default_factory=lambda: settings.SEEDCORE_SUPERVISE_SECONDS)
    heartbeat_timeout: float = field(default_factory=lambda: settings.SEEDCORE_HEARTBEAT_TIMEOUT)
    retention: RetentionPolicy = field(default_factory=lambda: RetentionPolicy.from_settings())
    config: DispatcherConfig = field(default_factory=DispatcherConfig.from_settings)


def check_database() -> None:
    """Raise SupervisorError if the database cannot be reached or lacks migrations."""
    from django.db.utils import OperationalError

    from tasks.selectors import pending_migrations

    try:
        pending = pending_migrations()
    except OperationalError as exc:
        raise SupervisorError(
            f"cannot reach the database ({str(exc).strip()}); check DATABASE_URL "
            "and that the database server is running"
        ) from None
    if pending:
        raise SupervisorError(
            f"the database lacks {pending} migration(s); run `python manage.py migrate`"
        )


def check_organs() -> None:
    """Raise SupervisorError if SEEDCORE_ORGANS is malformed, or a handler names an organ it
    does not have, before anything starts."""
    from django.core.exceptions import ImproperlyConfigured

    from organism.routing import configured_organs, handler_organs_problem

    try:
        organs = configured_organs()
    except ImproperlyConfigured as exc:
        raise SupervisorError(str(exc)) from None
    problem = handler_organs_problem(organs)
    if problem:
        raise SupervisorError(problem)


def connect(options: SupervisorOptions, *, start_local: bool) -> None:
    """Connect this process to Ray in the options' namespace."""
    from organism.ray.connect import RayUnavailable, ensure_connected

    settings.RAY_NAMESPACE = options.namespace
    try:
        ensure_connected(options.address or None, start_local=start_local)
    except RayUnavailable as exc:
        raise SupervisorError(str(exc)) from None
    except Exception as exc:  # ray.init raises several types for a bad address
        raise SupervisorError(
            f"cannot connect to Ray at {options.address or 'a local cluster'}: {exc}"
        ) from None


class Supervisor:
    """The tree's root: owns the handles of the Coordinator and the dispatchers."""

    def __init__(self, options: SupervisorOptions, out: Callable[[str], None] = print):
        self.options = options
        self.out = out
        self.dispatchers: dict[int, Any] = {}
        self.coordinator: Any = None
        # Why the last ping failed, in words an operator can act on (None: it answered).
        self.coordinator_error: str | None = "not pinged yet"
        self.restarts = 0
        self._previous: tuple[float, dict[str, int]] | None = None
        self._next_prune = 0.0  # monotonic time of the next pruning round

    # -- bootstrap ---------------------------------------------------------------------------

    def bootstrap(self) -> dict[str, Any]:
        """Coordinator answering, N dispatchers running; returns the first status."""
        declare_concurrency()
        deadline = time.monotonic() + COORDINATOR_READY_TIMEOUT
        while (ping_ms := self.ensure_coordinator()) is None:
            if time.monotonic() > deadline:
                raise SupervisorError(
                    "the Coordinator did not answer ping within "
                    f"{COORDINATOR_READY_TIMEOUT:.0f} s; see the Ray logs"
                )
            time.sleep(0.5)
        # The web learns at once that the Coordinator is back; asking for the summary now
        # would wait for the organism to start.
        with contextlib.suppress(Exception):
            self.publish(ping_ms, with_summary=False)
        self._warm_up_organism()
        # A dispatcher found dead (a name not yet freed after a kill) is recreated on the
        # next round; wait a little for all N rather than report a half-started tree.
        while True:
            snapshot = self.tick()
            if alive_count(snapshot) >= self.options.dispatchers or time.monotonic() > deadline:
                return snapshot
            time.sleep(0.5)

    def _warm_up_organism(self) -> None:
        # Organs and agents start on the first task otherwise; starting them now keeps that
        # first task fast. A failure here is reported, not fatal: the first task retries it.
        from organism.ray import driver

        try:
            driver.initialize_organism(self.coordinator, COORDINATOR_READY_TIMEOUT)
        except Exception as exc:
            self.out(f"organism not initialised yet ({type(exc).__name__}: {exc})")

    def ensure_coordinator(self) -> float | None:
        """Ping the Coordinator, creating it if absent; returns the ping in ms or None."""
        from organism.messages import ActorTimeout
        from organism.ray import actors, driver

        try:
            if self.coordinator is None:
                self.coordinator = actors.get_or_create_coordinator()
            ping_ms = driver.ping(self.coordinator, PING_TIMEOUT)
        except ActorTimeout:
            self.coordinator_error = (
                f"the Coordinator did not answer ping within {PING_TIMEOUT:g} s"
            )
            return None
        except Exception as exc:
            self.out(f"coordinator unavailable ({type(exc).__name__}); recreating it")
            self.coordinator_error = (
                f"the Coordinator is unavailable ({type(exc).__name__}); rundispatcher is "
                "recreating it"
            )
            self.coordinator = None
            self.restarts += 1
            return None
        self.coordinator_error = None
        return ping_ms

    def publish(self, ping_ms: float | None, *, with_summary: bool = True) -> bool:
        """Run the organism's scaling round on the backlog, record the types it holds back,
        and tell the web what this round saw of the Coordinator (organism.status); without a
        new summary, the last one published (and the last holds) stand."""
        from organism import status
        from organism.ray import driver
        from tasks import queue, selectors

        summary = None
        if ping_ms is not None and with_summary:
            try:
                backlog = selectors.backlog_by_type()
                summary = driver.organism_tick(self.coordinator, backlog, SUMMARY_TIMEOUT)
            except Exception as exc:  # the last summary stands; the ping says it is alive
                self.out(f"supervisor: organism summary failed: {exc}")
        if summary is not None:
            queue.set_waiting_for(summary.get("holds") or {})
            queue.set_organ_full(summary.get("organ_full") or {})
        return status.publish(
            namespace=self.options.namespace,
            ping_ms=ping_ms,
            error=self.coordinator_error,
            summary=summary,
        )

    def publish_stopped(self) -> None:
        from organism import status

        status.publish(
            namespace=self.options.namespace,
            ping_ms=None,
            error="rundispatcher stopped: nothing supervises the Coordinator or the "
            f"dispatchers; {status.START_HINT}",
            summary=None,
        )

    def ensure_dispatchers(self) -> list[dict[str, Any]]:
        """Start (idempotently) every dispatcher, recreating dead ones; their statuses."""
        from organism.messages import ActorTimeout
        from organism.ray import actors, driver

        if not self.dispatchers:
            self.dispatchers.update(actors.existing_dispatchers(self.options.namespace))
        # Each dispatcher learns how many share the queue: a NOTIFY wakes one of them.
        config = replace(self.options.config, dispatchers=self.options.dispatchers)
        for index in range(self.options.dispatchers):
            if index not in self.dispatchers:
                self.dispatchers[index] = actors.get_or_create_dispatcher(
                    index, config, self.options.namespace
                )
        answers = driver.start_dispatchers(self.dispatchers, config, PING_TIMEOUT)
        statuses = []
        for index, answer in answers.items():
            if isinstance(answer, ActorTimeout):
                statuses.append({"name": f"#{index}", "running": False, "busy": True})
            elif isinstance(answer, Exception):
                self.out(f"dispatcher {index} is dead ({type(answer).__name__}); restarting it")
                del self.dispatchers[index]
                self.restarts += 1
            else:
                statuses.append(answer)
        return statuses

    # -- supervising -------------------------------------------------------------------------

    def reap(self) -> list[dict[str, Any]]:
        from tasks import heartbeats, queue

        reaped = queue.reap(heartbeat_timeout=self.options.heartbeat_timeout)
        if reaped:  # persisted, so /metrics counts them whichever process scrapes
            totals = {"counters": {"reaped": len(reaped)}}
            heartbeats.add_to_totals(heartbeats.SUPERVISOR_TOTALS, totals)
        return reaped

    def prune_if_due(self) -> int:
        """Prune finished tasks (and audit entries and expired Idempotency-Keys) past
        retention, at most every ``interval_seconds``; returns how many tasks went."""
        from tasks import audit, idempotency, queue

        now = time.monotonic()
        if now < self._next_prune:
            return 0
        retention = self.options.retention
        self._next_prune = now + retention.interval_seconds
        audit.prune(
            retention.audit_days,
            batch_size=retention.batch_size,
            max_batches=retention.max_batches,
        )
        idempotency.prune_expired(retention)
        return queue.prune_expired(retention)

    def forget_dead_dispatchers(self) -> int:
        from tasks import heartbeats

        # Well past the reaper's timeout, so a row is only forgotten after its tasks were freed.
        return heartbeats.forget_dead_dispatchers(silent_for=DEAD_DISPATCHER_FORGET_SECONDS)

    def tick(self) -> dict[str, Any]:
        """One round: ping and restart, reap, count. Each step guarded: one failure (the
        database restarting) must never end supervision."""
        from tasks import selectors

        snapshot: dict[str, Any] = {"ping_ms": None, "dispatchers": [], "reaped": 0, "pruned": 0}
        for key, step in (
            ("ping_ms", self.ensure_coordinator),
            ("published", lambda: self.publish(snapshot["ping_ms"])),
            ("dispatchers", self.ensure_dispatchers),
            ("reaped", lambda: len(self.reap())),
            ("forgotten", self.forget_dead_dispatchers),
            ("pruned", self.prune_if_due),
            ("counts", lambda: {s: c.count for s, c in selectors.count_by_status().items()}),
        ):
            try:
                snapshot[key] = step()
            except Exception as exc:
                self.out(f"supervisor: {key} failed: {exc}")
                _close_broken_connections()
        snapshot["rates"] = self._rates(snapshot["dispatchers"])
        return snapshot

    def _rates(self, statuses: list[dict[str, Any]]) -> dict[str, float]:
        totals = {
            key: sum(s.get(key, 0) for s in statuses) for key in ("claimed", "completed", "failed")
        }
        now = time.monotonic()
        rates = dict.fromkeys(totals, 0.0)
        if self._previous is not None:
            then, before = self._previous
            elapsed = max(now - then, 1e-6)
            rates = {k: max(v - before.get(k, 0), 0) / elapsed for k, v in totals.items()}
        self._previous = (now, totals)
        return rates

    def status_line(self, snapshot: dict[str, Any]) -> str:
        counts = snapshot.get("counts") or {}
        depth = " ".join(f"{s.lower()}={counts.get(s, 0)}" for s in STATUS_ORDER)
        rates = snapshot["rates"]
        statuses = snapshot["dispatchers"]
        alive = alive_count(snapshot)
        in_flight = sum(s.get("in_flight", 0) for s in statuses)
        ping = snapshot["ping_ms"]
        ping_text = f"{ping:.1f} ms" if ping is not None else "DOWN"
        reaped = f" | reaped {snapshot['reaped']}" if snapshot["reaped"] else ""
        pruned = f" | pruned {snapshot['pruned']}" if snapshot.get("pruned") else ""
        open_circuits = sum(1 for s in statuses if s.get("circuit", "closed") != "closed")
        circuits = f" | {open_circuits} circuit(s) open" if open_circuits else ""
        return (
            f"{depth} | claimed {rates['claimed']:.0f}/s completed {rates['completed']:.0f}/s "
            f"failed {rates['failed']:.0f}/s | in flight {in_flight} | dispatchers "
            f"{alive}/{self.options.dispatchers} | coordinator {ping_text}{reaped}{pruned}"
            f"{circuits}"
        )

    def supervise(self, stop: threading.Event) -> None:
        """Tick and report every ``interval`` seconds until ``stop`` is set; meanwhile a
        thread of its own enqueues the schedules' due runs (:meth:`run_schedules`)."""
        scheduler = threading.Thread(
            target=self.run_schedules, args=(stop,), name="seedcore-schedules", daemon=True
        )
        scheduler.start()
        try:
            while not stop.wait(self.options.interval):
                self.out(self.status_line(self.tick()))
        finally:
            scheduler.join(timeout=PING_TIMEOUT)

    def run_schedules(self, stop: threading.Event) -> None:
        """Enqueue due schedule runs until ``stop`` is set, sleeping until the earliest next
        run but at most ``interval`` (so a new or edited schedule is seen within a round).

        A thread of its own, so a slow round (a Ray call timing out) never delays a schedule,
        and a 1-second schedule runs every second. The rounds' Ray calls stay in the main
        thread; this one only talks to PostgreSQL, on its own connection.
        """
        from django.db import connections
        from django.utils import timezone

        from tasks import schedules

        try:
            while not stop.is_set():
                earliest = None
                try:
                    schedules.enqueue_due()
                    earliest = schedules.earliest_next_run()
                except Exception as exc:
                    self.out(f"supervisor: schedules failed: {exc}")
                    _close_broken_connections()
                wait = schedules.seconds_until(earliest, timezone.now(), cap=self.options.interval)
                stop.wait(wait)
        finally:
            connections.close_all()

    # -- stopping ----------------------------------------------------------------------------

    def stop_dispatchers(self, *, kill: bool = True) -> int:
        """Stop every dispatcher gracefully (in-flight tasks finish or go back to the queue),
        then end the actors; returns how many tasks were released."""
        from organism.ray import actors, driver

        handles = {**actors.existing_dispatchers(self.options.namespace), **self.dispatchers}
        timeout = self.options.config.grace_seconds + PING_TIMEOUT
        released = driver.stop_dispatchers(list(handles.values()), timeout, kill=kill)
        self.dispatchers.clear()
        return released


def declare_concurrency() -> None:
    """Record the concurrency limits the handlers declare (``@handler(..., concurrency=N)``)
    where every dispatcher's claim reads them, so they hold across the whole cluster."""
    from organism import handlers
    from tasks import queue

    handlers.autodiscover()
    queue.declare_concurrency(handlers.declared_concurrency())


def alive_count(snapshot: dict[str, Any]) -> int:
    return sum(1 for status in snapshot["dispatchers"] if status.get("running"))


def run_foreground(
    options: SupervisorOptions,
    out: Callable[[str], None],
    stop: threading.Event,
    *,
    handle_signals: bool = True,
) -> None:
    """``rundispatcher``: bootstrap, supervise until ``stop`` (or SIGINT/SIGTERM), then stop
    gracefully."""
    check_database()
    check_organs()
    connect(options, start_local=True)
    if handle_signals:  # after connecting: ray.init installs a SIGTERM handler of its own
        stop_on_signals(stop)
    supervisor = Supervisor(options, out)
    try:
        out(supervisor.status_line(supervisor.bootstrap()))
        out(f"supervising {options.dispatchers} dispatcher(s) in namespace {options.namespace!r}")
        supervisor.supervise(stop)
    finally:
        out("stopping: letting in-flight tasks finish, releasing the rest")
        released = supervisor.stop_dispatchers()
        with contextlib.suppress(Exception):  # the database may be what stopped us
            supervisor.publish_stopped()
        out(f"stopped; {released} task(s) released back to the queue")


def run_detached(options: SupervisorOptions, out: Callable[[str], None]) -> None:
    """``rundispatcher --detach``: bootstrap and check, leaving the detached actors running."""
    check_database()
    check_organs()
    if not options.address:
        options.address = "auto"
    connect(options, start_local=False)
    supervisor = Supervisor(options, out)
    snapshot = supervisor.bootstrap()
    alive = alive_count(snapshot)
    if alive < options.dispatchers:
        raise SupervisorError(f"only {alive} of {options.dispatchers} dispatchers started")
    out(supervisor.status_line(snapshot))
    out(f"detached: Coordinator and {alive} dispatcher(s) run in namespace {options.namespace!r}")


def stop_namespace(options: SupervisorOptions, out: Callable[[str], None]) -> None:
    """``rundispatcher --stop``: stop the namespace's dispatchers gracefully, then the
    Coordinator."""
    from organism.messages import CoordinatorUnavailable
    from organism.ray import actors, driver

    if not options.address:
        options.address = "auto"
    connect(options, start_local=False)
    supervisor = Supervisor(options, out)
    found = len(actors.existing_dispatchers(options.namespace))
    released = supervisor.stop_dispatchers()
    out(f"stopped {found} dispatcher(s); {released} task(s) released back to the queue")
    try:
        coordinator = actors.get_coordinator()
    except CoordinatorUnavailable:
        out("no Coordinator was running")
        return
    try:  # organs and agents are detached too: shut them down before the Coordinator
        driver.shutdown_organism(coordinator, COORDINATOR_READY_TIMEOUT)
    except Exception as exc:
        out(f"could not shut the organism down ({type(exc).__name__}); stopping anyway")
    try:
        driver.kill(coordinator)
        out("stopped the Coordinator")
    except Exception:
        out("no Coordinator was running")


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (the main thread then shuts down gracefully)."""

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _close_broken_connections() -> None:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()
