"""The overview's numbers over the last hour: throughput, failure rate, enqueue→start latency.

Each query is bounded by ``updated_at >= now - 1 h`` (the ``tasks_updated_idx`` index), so its
cost follows the last hour's activity, not the size of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncMinute

from tasks.models import Status, Task

WINDOW_MINUTES = 60
LATENCY_SAMPLE = 2000
CHART_WIDTH = 600
CHART_HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    completed_height: float
    failed_height: float
    minute: datetime
    completed: int
    failed: int

    @property
    def completed_y(self) -> float:
        return round(CHART_HEIGHT - self.completed_height, 2)

    @property
    def failed_y(self) -> float:
        return round(self.completed_y - self.failed_height, 2)


@dataclass(frozen=True)
class HourStats:
    completed: int
    failed: int
    bars: list[Bar]
    peak: int
    latency_p50: float | None
    latency_p95: float | None
    latency_samples: int

    @property
    def failure_rate(self) -> float | None:
        finished = self.completed + self.failed
        return None if not finished else 100.0 * self.failed / finished


def last_hour(now: datetime | None = None) -> HourStats:
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    since = now - timedelta(minutes=WINDOW_MINUTES)
    per_minute: dict[tuple[datetime, str], int] = {}
    rows = (
        Task.objects.filter(updated_at__gte=since, status__in=[Status.COMPLETED, Status.FAILED])
        .annotate(minute=TruncMinute("updated_at"))
        .values("minute", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        per_minute[(row["minute"].astimezone(UTC), row["status"])] = row["n"]
    minutes = [since + timedelta(minutes=i) for i in range(WINDOW_MINUTES)]
    completed = [per_minute.get((m, Status.COMPLETED), 0) for m in minutes]
    failed = [per_minute.get((m, Status.FAILED), 0) for m in minutes]
    p50, p95, samples = _latency(since)
    return HourStats(
        completed=sum(completed),
        failed=sum(failed),
        bars=chart_bars(minutes, completed, failed),
        peak=max((c + f for c, f in zip(completed, failed, strict=True)), default=0),
        latency_p50=p50,
        latency_p95=p95,
        latency_samples=samples,
    )


def chart_bars(minutes: list[datetime], completed: list[int], failed: list[int]) -> list[Bar]:
    """Stacked bars (completed below, failed on top) scaled into the chart's box."""
    peak = max((c + f for c, f in zip(completed, failed, strict=True)), default=0) or 1
    slot = CHART_WIDTH / max(len(minutes), 1)
    scale = (CHART_HEIGHT - 4) / peak
    return [
        Bar(
            x=round(i * slot + 1, 2),
            width=round(slot - 2, 2),
            completed_height=round(c * scale, 2),
            failed_height=round(f * scale, 2),
            minute=minute,
            completed=c,
            failed=f,
        )
        for i, (minute, c, f) in enumerate(zip(minutes, completed, failed, strict=True))
    ]


def _latency(since: datetime) -> tuple[float | None, float | None, int]:
    """Seconds from enqueue to first start, over first attempts started in the window."""
    pairs = (
        Task.objects.filter(updated_at__gte=since, attempts=1, locked_at__isnull=False)
        .order_by()
        .values_list("created_at", "locked_at")[:LATENCY_SAMPLE]
    )
    waits = sorted(max(0.0, (locked - created).total_seconds()) for created, locked in pairs)
    if not waits:
        return None, None, 0
    return _percentile(waits, 0.5), _percentile(waits, 0.95), len(waits)


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
