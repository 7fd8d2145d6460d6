"""Prometheus metrics: what dispatchers record, and the /metrics exposition that sums it.

Dispatchers run in many processes on many nodes, so none of them serves metrics itself:
each keeps cumulative counters and histogram bucket counts (:class:`HistogramSet`) and writes
them with every heartbeat (``dispatchers.stats``). ``/metrics`` sums those rows plus the
``metric_totals`` rows, where a forgotten dispatcher's counts are folded and the supervisor
adds what it reaped, so totals only go backwards if those tables are wiped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Upper bounds in seconds; +Inf is implied. Shared by the writers and the exposition.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RUN_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HISTOGRAMS = {
    "queue_wait_seconds": (
        QUEUE_WAIT_BUCKETS,
        "Time from a task becoming claimable to its claim, by task type",
    ),
    "run_seconds": (
        RUN_DURATION_BUCKETS,
        "Time from a claimed task's dispatch to its outcome, by task type",
    ),
}
# The histograms' `type` label: a registered handler's type, else this one. A task's type is
# whatever its client chose, so labelling by it unchecked lets any client grow every heartbeat
# and /metrics without bound (one series per type, kept for good in metric_totals).
OTHER_TYPE = "other"


def type_label(task_type: str) -> str:
    """``task_type`` if a handler is registered for it, else :data:`OTHER_TYPE`."""
    from organism.handlers import get_handler

    return task_type if get_handler(task_type) is not None else OTHER_TYPE


def bounded_by_type(by_label: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One metric's histograms with every unregistered type folded into ``other`` (rows an
    older dispatcher wrote may hold any label)."""
    from tasks.heartbeats import merge_stats

    folded: dict[str, Any] = {}
    for label, hist in by_label.items():
        merge_stats(folded, {"histograms": {"m": {type_label(label): hist}}})
    return folded.get("histograms", {}).get("m", {})


COUNTERS = {
    "claimed": "Tasks claimed by dispatchers",
    "completed": "Attempts written COMPLETED",
    "failed": "Attempts written FAILED (no attempts left, or a permanent error)",
    "retried": "Attempts that failed and were sent back to RETRY",
    "cancelled": "Attempts that ended CANCELLED",
    "stale": "Outcomes refused by the fence (the task was reaped or released meanwhile)",
    "released": "Tasks released back to the queue by a stopping dispatcher",
    "coordinator_errors": "Failed Coordinator look-ups and batch calls",
    "circuit_opened": "Times a dispatcher's circuit breaker opened",
    "reaped": "RUNNING tasks the supervisor's reaper sent back (lease or heartbeat lost)",
}


# Attempts Ray lost (SYSTEM failures) are counted per kind under counters named with this
# prefix (``system_failures.actor_died``), exposed as seedcore_task_system_failures_total{kind}.
SYSTEM_FAILURES = "system_failures."


@dataclass
class HistogramSet:
    """Non-cumulative bucket counts per (metric, type label); the last bucket is +Inf."""

    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def observe(self, metric: str, task_type: str, value: float) -> None:
        label = type_label(task_type)
        bounds = HISTOGRAMS[metric][0]
        hist = self.data.setdefault(metric, {}).get(label)
        if hist is None:
            hist = {"buckets": [0] * (len(bounds) + 1), "sum": 0.0, "count": 0}
            self.data[metric][label] = hist
        hist["buckets"][bisect.bisect_left(bounds, value)] += 1
        hist["sum"] += value
        hist["count"] += 1


def queue_wait_seconds(task: dict[str, Any]) -> float | None:
    """Claimed row → seconds between becoming claimable (created, or run_after) and the claim."""
    claimed_at: datetime | None = task.get("locked_at")
    ready = task.get("created_at")
    if claimed_at is None or ready is None:
        return None
    run_after = task.get("run_after")
    if run_after is not None and run_after > ready:
        ready = run_after
    return max((claimed_at - ready).total_seconds(), 0.0)


# ---------------------------------------------------------------------------------------------
# Exposition (the web side)


@dataclass
class Snapshot:
    """Everything /metrics shows, read once per scrape."""

    counts: dict[str, int]
    dispatchers: list[dict[str, Any]]
    totals: dict[str, dict[str, Any]]
    ping_ms: float | None


def read_database() -> Snapshot:
    """Counts, stats rows and the Coordinator's published ping (sync ORM: call from a thread).

    The ping is what rundispatcher last reported (organism.status), None when it is down or
    its report is stale: /metrics, like every web page, never asks Ray itself.
    """
    from organism import status
    from tasks import selectors

    counts = {name: c.count for name, c in selectors.count_by_status().items()}
    sources = selectors.metric_sources()
    coordinator = status.coordinator_view(status.read())
    ping_ms = coordinator["ping_ms"] if coordinator["healthy"] else None
    return Snapshot(counts, sources["dispatchers"], sources["totals"], ping_ms)


async def collect() -> Snapshot:
    """:func:`read_database`, in a thread."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(read_database)()


def summed_stats(snapshot: Snapshot) -> dict[str, Any]:
    from tasks.heartbeats import merge_stats

    total: dict[str, Any] = {}
    for stats in [*snapshot.totals.values(), *(d["stats"] for d in snapshot.dispatchers)]:
        merge_stats(total, stats)
    return total


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text format of ``snapshot``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self.snapshot
        tasks = GaugeMetricFamily(
            "seedcore_tasks",
            "Tasks by status (exact up to a cap, then estimated)",
            labels=["status"],
        )
        for status, count in sorted(snap.counts.items()):
            tasks.add_metric([status], count)
        yield tasks

        stats = summed_stats(snap)
        counters = stats.get("counters", {})
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(f"seedcore_tasks_{name}", help_text, counters.get(name, 0))
        yield _system_failures(counters)

        for metric, (bounds, help_text) in HISTOGRAMS.items():
            family = HistogramMetricFamily(f"seedcore_task_{metric}", help_text, labels=["type"])
            by_label = bounded_by_type(stats.get("histograms", {}).get(metric, {}))
            for label, hist in sorted(by_label.items()):
                if len(hist["buckets"]) != len(bounds) + 1:
                    continue  # written with other bounds by an older dispatcher
                family.add_metric([label], _cumulative(bounds, hist["buckets"]), hist["sum"])
            yield family

        yield from self._dispatchers()

        up = GaugeMetricFamily("seedcore_coordinator_up", "1 if the Coordinator answered ping")
        up.add_metric([], 0 if snap.ping_ms is None else 1)
        yield up
        if snap.ping_ms is not None:
            yield GaugeMetricFamily(
                "seedcore_coordinator_ping_seconds",
                "Round trip of the Coordinator's ping, from this web process",
                snap.ping_ms / 1000.0,
            )

    def _dispatchers(self) -> Iterable[Any]:
        from django.conf import settings
        from prometheus_client.core import GaugeMetricFamily

        snap = self.snapshot
        age = GaugeMetricFamily(
            "seedcore_dispatcher_heartbeat_age_seconds",
            "Seconds since each dispatcher's last heartbeat",
            labels=["dispatcher"],
        )
        circuit = GaugeMetricFamily(
            "seedcore_dispatcher_circuit_open",
            "1 if the dispatcher's circuit breaker is open or half-open (it claims nothing)",
            labels=["dispatcher", "state"],
        )
        alive = 0
        for row in snap.dispatchers:
            # Liveness and age as tasks.selectors.list_dispatchers gives them (one rule).
            alive += row["alive"]
            age.add_metric([row["name"]], row["beat_age"])
            state = row["stats"].get("circuit", "closed")
            circuit.add_metric([row["name"], state], 0 if state == "closed" else 1)
        yield GaugeMetricFamily(
            "seedcore_dispatchers_alive",
            "Dispatchers whose last heartbeat is at most SEEDCORE_HEARTBEAT_TIMEOUT "
            f"({settings.SEEDCORE_HEARTBEAT_TIMEOUT:g} s) old",
            alive,
        )
        yield age
        yield circuit


def _system_failures(counters: dict[str, int]) -> Any:
    """Attempts Ray lost, by kind: every known kind (0 until one happens), and any other kind
    a dispatcher wrote."""
    from prometheus_client.core import CounterMetricFamily

    from organism.messages import SYSTEM_KINDS

    by_kind = dict.fromkeys(SYSTEM_KINDS, 0)
    for name, count in counters.items():
        if name.startswith(SYSTEM_FAILURES):
            kind = name[len(SYSTEM_FAILURES) :]
            by_kind[kind] = by_kind.get(kind, 0) + count
    family = CounterMetricFamily(
        "seedcore_task_system_failures",
        "Attempts Ray lost (agent actor died, node removed, worker killed for memory, object "
        "lost), by kind: retried at once, not counted against the task's attempts",
        labels=["kind"],
    )
    for kind, count in sorted(by_kind.items()):
        family.add_metric([kind], count)
    return family


def _cumulative(bounds: tuple[float, ...], buckets: list[int]) -> list[tuple[str, int]]:
    running, out = 0, []
    for bound, count in zip([*map(str, bounds), "+Inf"], buckets, strict=True):
        running += count
        out.append((bound, running))
    return out
