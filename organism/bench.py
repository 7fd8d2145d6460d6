"""What ``manage.py benchdispatch`` measures, as a user feels it.

- **Throughput**: a backlog is queued *held* (``run_after`` a day ahead) while the dispatchers
  and the organism are already up and warm, then released at once; the time runs on the
  database clock from the release to the last COMPLETED row. So actor start-up and the
  enqueue are outside the timed window, as they are for a user whose queue fills up.
- **Start latency**: ``probe`` tasks inserted one at a time at a steady rate while the
  dispatchers are otherwise idle; each handler records when it started (``time.time()`` in the
  agent), so the figure is enqueue → handler start (NOTIFY, claim, Coordinator, agent), not the
  claim. The insert time is PostgreSQL's clock: both clocks are this machine's on a local run.
- **CPU per task**: CPU seconds of each group of processes (PostgreSQL backends, dispatcher,
  Coordinator, organ and agent actors, the rest of Ray) read before and after the drain.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil
from django.db import connection
from django.db.models import Max
from django.db.models.functions import Now

from tasks import queue
from tasks.models import Status, Task

UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.RETRY)
HOLD_FOR = timedelta(days=1)

# The process groups CPU is reported for, in print order. Ray titles an actor's worker
# process ``ray::<ClassName>`` (then ``.method`` while it runs one).
GROUPS = ("PostgreSQL", "dispatchers", "Coordinator", "agents", "organs", "other Ray", "driver")
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


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------------------
# CPU per process group


def _group_of(process: psutil.Process, postgres_pids: set[int]) -> str | None:
    if process.pid in postgres_pids:
        return "PostgreSQL"
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


def _postgres_pids() -> set[int]:
    """This database's backends and the server's own processes, when they run on this host."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "OR backend_type <> 'client backend'"
        )
        return {row[0] for row in cursor.fetchall()}


def _ray_processes() -> list[psutil.Process]:
    """The Ray processes this run started (GCS, raylet, workers: all below this process), or,
    joined to a cluster that something else started, every ``ray::`` worker on this host."""
    own = psutil.Process().children(recursive=True)
    if own:
        return own
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::"):
            found.append(process)
    return found


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


def wait_until_finished(tag: str, *, timeout: float, poll: float = 0.05) -> bool:
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
    """Queue ``specs`` held, release them at once, and time the drain on the database clock."""
    ids = queue.enqueue_many(
        {**spec, "description": tag, "run_after": _held_until()} for spec in specs
    )
    before = cpu_snapshot()
    released_at = _release(tag, ids[0])
    if on_released:
        on_released()
    finished = wait_until_finished(tag, timeout=timeout)
    after = cpu_snapshot()
    done = Task.objects.filter(description=tag, status=Status.COMPLETED)
    last = done.aggregate(last=Max("updated_at"))["last"]
    seconds = (last - released_at).total_seconds() if last else float("inf")
    if not finished:
        seconds = float("inf")
    return Drain(len(ids), done.count(), seconds, cpu_spent(before, after))


def _held_until() -> datetime:
    return datetime.now(UTC) + HOLD_FOR


def _release(tag: str, first_id: str) -> datetime:
    """Make the held tasks due now and wake the dispatchers (a ``run_after`` change is not a
    status change, so the triggers do not announce it); returns the database's release time."""
    Task.objects.filter(description=tag).update(run_after=Now())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, json_build_array(json_build_array(%s, 'QUEUED', 'bench'))::text),"
            " now()",
            [queue.NOTIFY_CHANNEL, first_id],
        )
        return cursor.fetchone()[1]


def start_latency(tag: str, count: int, rate: float, *, timeout: float = 60.0) -> Latency:
    """Insert ``count`` probe tasks ``1/rate`` s apart; enqueue → handler start in ms."""
    gap = 1.0 / rate
    next_at = time.monotonic()
    for i in range(count):
        queue.enqueue(type="probe", params={"i": i}, description=tag)
        next_at += gap
        time.sleep(max(0.0, next_at - time.monotonic()))
    wait_until_finished(tag, timeout=timeout)
    rows = Task.objects.filter(description=tag, status=Status.COMPLETED).values_list(
        "created_at", "result"
    )
    waits = [
        (result["output"]["started_at"] - created_at.timestamp()) * 1000
        for created_at, result in rows
        if isinstance(result, dict) and isinstance(result.get("output"), dict)
    ]
    if not waits:
        return Latency(count, 0, math.nan, math.nan, math.nan, math.nan)
    return Latency(
        count,
        len(waits),
        statistics.median(waits),
        percentile(waits, 0.95),
        percentile(waits, 0.99),
        max(waits),
    )


def forget(tag_prefix: str) -> int:
    """Delete the benchmark's own tasks."""
    return Task.objects.filter(description__startswith=tag_prefix).delete()[0]
