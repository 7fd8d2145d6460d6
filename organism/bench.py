"""What ``manage.py benchdispatch`` measures, as a user feels it.

- **Throughput**: a backlog is queued *held* (its type paused) while the dispatchers and the
  organism are already up and warm, then released at once (resumed); the time runs on the
  database clock from the release to the last COMPLETED row. So actor start-up and the
  enqueue are outside the timed window, as they are for a user whose queue fills up.
- **Start latency**: ``probe`` tasks inserted one at a time at a steady rate while the
  dispatchers are otherwise idle; each handler records when it started (``time.time()`` in the
  agent), so the figure is enqueue → handler start (NOTIFY, claim, Coordinator, agent), not the
  claim. The insert time is PostgreSQL's clock: both clocks are this machine's on a local run.
- **Where a start goes**: a bare listener hears each probe's NOTIFY as the dispatchers do, which
  splits a start into PostgreSQL's part (insert, durable commit, NOTIFY), the claim, and
  Ray's part (dispatcher → Coordinator → agent); and a bare actor, called at the same rate,
  gives what one Ray actor call costs this machine with nothing of SeedCore's in it.
- **CPU per task**: CPU seconds of each group of processes (PostgreSQL backends, dispatcher,
  Coordinator, organ and agent actors, the rest of Ray) read before and after the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psutil
from django.db import connection
from django.db.models import Max

from tasks import queue
from tasks.models import Status, Task

UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.RETRY)
ENQUEUE_CHUNK = 10_000

# The process groups CPU is reported for, in print order. Ray titles an actor's worker
# process ``ray::<ClassName>`` (then ``.method`` while it runs one).
# PostgreSQL is split in two: the backends running the statements, and the server's own
# processes (WAL writer, checkpointer, autovacuum), which the statements' writes keep busy.
GROUPS = (
    "PostgreSQL",
    "PostgreSQL background",
    "dispatchers",
    "Coordinator",
    "agents",
    "organs",
    "other Ray",
    "driver",
)
_ACTOR_GROUPS = {
    "ray::DispatcherActor": "dispatchers",
    "ray::CoordinatorActor": "Coordinator",
    "ray::AgentActor": "agents",
    "ray::OrganActor": "organs",
}


@dataclass(frozen=True)
class Drain:
    tasks: int
    completed: int
    seconds: float
    cpu_seconds: dict[str, float]
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)  # PeakMemory.by_group
    claims: int = 0  # claim statements that took the drain's tasks
    peak_running: int = 0  # most handlers running at once (probe tasks only)

    @property
    def per_claim(self) -> float:
        return self.completed / self.claims if self.claims else 0.0

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def cpu_us_per_task(self) -> dict[str, float]:
        done = max(self.completed, 1)
        return {group: seconds * 1e6 / done for group, seconds in self.cpu_seconds.items()}


@dataclass(frozen=True)
class Latency:
    count: int
    started: int
    p50: float
    p95: float
    p99: float
    max: float
    claim_p50: float = math.nan  # enqueue → claimed (the part the database's clock sees)
    notify_p50: float = math.nan  # enqueue → NOTIFY heard by a bare listener


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------------------
# CPU per process group


def _group_of(process: psutil.Process, postgres_pids: dict[int, str]) -> str | None:
    if process.pid in postgres_pids:
        return postgres_pids[process.pid]
    if process.pid == os.getpid():
        return "driver"
    try:
        title = " ".join(process.cmdline()[:1]) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    for prefix, group in _ACTOR_GROUPS.items():
        if title.startswith(prefix):
            return group
    return "other Ray"


def _postgres_pids() -> dict[int, str]:
    """pid → group of this database's backends and the server's own processes (when they run
    on this host)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_type = 'client backend', pid = pg_backend_pid() "
            "FROM pg_stat_activity "
            "WHERE datname = current_database() OR backend_type <> 'client backend'"
        )
        # The benchmark's own backend (the release, the polling) is the driver's cost.
        return {
            pid: "driver" if own else "PostgreSQL" if client else "PostgreSQL background"
            for pid, client, own in cursor.fetchall()
        }


def _ray_processes() -> list[psutil.Process]:
    """The Ray processes this run started (GCS, raylet, workers: all below this process), or,
    joined to a cluster that something else started, every ``ray::`` worker on this host."""
    own = [p for p in psutil.Process().children(recursive=True) if not _is_profiler(p)]
    if own:
        return own
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::"):
            found.append(process)
    return found


def _is_profiler(process: psutil.Process) -> bool:
    """``benchdispatch --profile``'s py-spy processes: not part of what is measured."""
    try:
        return process.name() == "py-spy"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return True


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """pid → (group, CPU seconds so far) for every process the benchmark accounts for."""
    postgres = _postgres_pids()
    processes = [*_ray_processes(), psutil.Process()]
    for pid in postgres:
        # Not found: a server on another host, or a backend that just ended.
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    snapshot = {}
    for process in processes:
        group = _group_of(process, postgres)
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if group is not None:
            snapshot[process.pid] = (group, times.user + times.system)
    return snapshot


class PeakMemory:
    """The resident memory of every SeedCore actor process, sampled in a thread from
    :meth:`start` to :meth:`stop`: per group, the largest process at the start and at its peak
    (what a backlog's size must not grow)."""

    SECONDS = 0.5

    def __init__(self):
        self.first: dict[int, tuple[str, int]] = {}
        self.peak: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> PeakMemory:
        self._sample()
        self.first = dict(self.peak)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_group(self) -> dict[str, tuple[float, float]]:
        """group → (MiB of its largest process at the start, MiB of its largest at its peak)."""
        out: dict[str, tuple[float, float]] = {}
        for pid, (group, peak) in self.peak.items():
            first = self.first.get(pid, (group, 0))[1]
            was_first, was_peak = out.get(group, (0.0, 0.0))
            out[group] = (max(was_first, first / 2**20), max(was_peak, peak / 2**20))
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.SECONDS):
            self._sample()

    def _sample(self) -> None:
        for process in _ray_processes():
            group = _group_of(process, {})
            if group not in _ACTOR_GROUPS.values():
                continue
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if rss > self.peak.get(process.pid, (group, 0))[1]:
                self.peak[process.pid] = (group, rss)


def cpu_spent(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per group between two snapshots (a process new since ``before`` counts
    from zero; one gone by ``after`` is not seen, which a steady run does not do)."""
    spent = dict.fromkeys(GROUPS, 0.0)
    for pid, (group, seconds) in after.items():
        spent[group] += seconds - before.get(pid, (group, 0.0))[1]
    return spent


# ---------------------------------------------------------------------------------------------
# The runs


def wait_until_finished(tag: str, *, timeout: float, poll: float = 0.25) -> bool:
    # Each look reads the tag's unfinished rows, which costs PostgreSQL CPU the figures
    # count; the drain's end is the last row's updated_at, so looking seldom loses nothing.
    deadline = time.monotonic() + timeout
    while Task.objects.filter(description=tag, status__in=UNFINISHED).exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def drain(
    tag: str,
    specs: Iterable[dict],
    *,
    timeout: float = 600.0,
    on_released: Callable[[], None] | None = None,
) -> Drain:
    """Queue ``specs`` held (their types paused), release them at once (resumed), and time
    the drain on the database clock."""
    specs = list(specs)
    types = sorted({spec["type"] for spec in specs})
    for type in types:
        queue.pause(type)
    try:
        ids = []
        for start in range(0, len(specs), ENQUEUE_CHUNK):  # a million rows: not one statement
            chunk = specs[start : start + ENQUEUE_CHUNK]
            ids += queue.enqueue_many({**spec, "description": tag} for spec in chunk)
        before = cpu_snapshot()
    except BaseException:
        for type in types:
            queue.resume(type)
        raise
    memory = PeakMemory().start()
    released_at = _release(types)
    if on_released:
        on_released()
    try:
        finished = wait_until_finished(tag, timeout=timeout)
    finally:
        memory.stop()
    after = cpu_snapshot()
    done = Task.objects.filter(description=tag, status=Status.COMPLETED)
    last = done.aggregate(last=Max("updated_at"))["last"]
    seconds = (last - released_at).total_seconds() if last else float("inf")
    if not finished:
        seconds = float("inf")
    claims, peak = _claims_and_peak(tag)
    spent = cpu_spent(before, after)
    return Drain(len(ids), done.count(), seconds, spent, memory.by_group(), claims, peak)


def _claims_and_peak(tag: str) -> tuple[int, int]:
    """How many claim statements took the tasks tagged ``tag`` (the rows one statement claims
    share its ``locked_by`` and ``locked_at``), and the most probe handlers running at once
    (each probe's result says when it started and how long it slept)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT (locked_by, locked_at)) FROM tasks WHERE description = %s",
            [tag],
        )
        claims = cursor.fetchone()[0]
        cursor.execute(
            "WITH runs AS (SELECT (result->'output'->>'started_at')::float8 AS start, "
            "coalesce((params->>'sleep')::float8, 0) AS seconds FROM tasks "
            "WHERE description = %s AND result->'output' ? 'started_at'), "
            "edges AS (SELECT start AS at, 1 AS step FROM runs "
            "UNION ALL SELECT start + seconds, -1 FROM runs) "
            "SELECT coalesce(max(running), 0) FROM (SELECT sum(step) OVER "
            "(ORDER BY at, step ROWS UNBOUNDED PRECEDING) AS running FROM edges) AS counted",
            [tag],
        )
        return claims, cursor.fetchone()[0]


def _release(types: list[str]) -> datetime:
    """Resume the paused ``types`` (which wakes the dispatchers); returns the database's time
    just before, where the drain's clock starts."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        released_at = cursor.fetchone()[0]
    for type in types:
        queue.resume(type)
    return released_at


def start_latency(tag: str, count: int, rate: float, *, timeout: float = 60.0) -> Latency:
    """Insert ``count`` probe tasks ``1/rate`` s apart; enqueue → handler start in ms."""
    gap = 1.0 / rate
    with NotifyClock() as notifies:
        next_at = time.monotonic()
        for i in range(count):
            queue.enqueue(type="probe", params={"i": i}, description=tag)
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))
        wait_until_finished(tag, timeout=timeout)
    rows = Task.objects.filter(description=tag, status=Status.COMPLETED).values_list(
        "id", "created_at", "locked_at", "result"
    )
    waits, claims, heard = [], [], []
    for task_id, created_at, locked_at, result in rows:
        if isinstance(result, dict) and isinstance(result.get("output"), dict):
            waits.append((result["output"]["started_at"] - created_at.timestamp()) * 1000)
            claims.append((locked_at - created_at).total_seconds() * 1000)
            if str(task_id) in notifies.heard:
                heard.append((notifies.heard[str(task_id)] - created_at.timestamp()) * 1000)
    if not waits:
        return Latency(count, 0, math.nan, math.nan, math.nan, math.nan)
    return Latency(
        count,
        len(waits),
        statistics.median(waits),
        percentile(waits, 0.95),
        percentile(waits, 0.99),
        max(waits),
        statistics.median(claims),
        statistics.median(heard) if heard else math.nan,
    )


class NotListening(RuntimeError):
    """The benchmark's own listener could not LISTEN."""


class NotifyClock:
    """When each task's NOTIFY as QUEUED reaches a bare listener (``time.time()``, by id):
    a listener of its own, on a thread of its own, beside the dispatchers' listeners, so the
    PostgreSQL part of a start is measured as a dispatcher hears it."""

    def __init__(self) -> None:
        self.heard: dict[str, float] = {}
        self._listening = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="notify-clock", daemon=True)

    def __enter__(self) -> NotifyClock:
        self._thread.start()
        if not self._listening.wait(10):
            self.__exit__(None, None, None)
            raise NotListening(
                "benchdispatch could not LISTEN for its probes' NOTIFYs within 10 s; "
                "is the database reachable?"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(5)

    def _run(self) -> None:
        from tasks.queue import NOTIFY_CHANNEL
        from tasks.sql import listen_forever

        self._loop = asyncio.new_event_loop()
        self._listener = self._loop.create_task(
            listen_forever(NOTIFY_CHANNEL, on_listen=self._listening.set, on_notify=self._notified)
        )
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._listener)
        self._loop.close()

    def _stop(self) -> None:
        self._listener.cancel()

    def _notified(self, payload: str) -> None:
        now = time.time()
        for task_id, status in queue.parse_notify_payload(payload) or []:
            if status == Status.QUEUED:
                self.heard.setdefault(task_id, now)


def ray_call_latency(count: int, rate: float) -> float:
    """p50 ms of a bare Ray actor call, one way (the call → the method's start), made
    ``1/rate`` s apart as the probes are: what this machine charges for each of the two actor
    calls in a start (dispatcher → Coordinator → agent), with nothing of SeedCore's in it."""
    import ray

    from organism.ray.actors import create_clock

    clock = create_clock()
    try:
        ray.get(clock.since.remote(time.time()))  # placed and warm before anything is timed
        ways = []
        for _ in range(count):
            time.sleep(1.0 / rate)
            ways.append(ray.get(clock.since.remote(time.time())) * 1000)
        return statistics.median(ways)
    finally:
        ray.kill(clock)


def forget(tag_prefix: str) -> int:
    """Delete the benchmark's own tasks: one statement (the database cascades), as Django's
    delete would first load every id of a million-task run."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM tasks WHERE description LIKE %s", [f"{tag_prefix}%"])
        return cursor.rowcount
