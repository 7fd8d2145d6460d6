"""Where every dashboard websocket frame comes from: one relay and one monitor per web process.

- The **relay** turns task changes into ``tasks.changed`` group messages: it LISTENs on
  ``seedcore_tasks``, where the triggers of migration 0002 NOTIFY on commit, so nothing rolled
  back is ever shown. Bursts are coalesced by :class:`Coalescer`: at most one frame per
  ``FLUSH_INTERVAL`` whatever the churn. Each page then gets these frames through its own
  :class:`dashboard.flow.Outbox` (flow control). If the LISTEN connection drops, the relay
  reconnects with backoff and tells the pages to reload, since NOTIFYs sent meanwhile are lost.
- The **monitor** reads what ``rundispatcher`` publishes of the Coordinator (ping, organism
  summary: ``organism.status``) and the dispatcher heartbeats, every ``MONITOR_INTERVAL``
  seconds and at once on a NOTIFY ``seedcore_health``, and broadcasts ``health.changed`` when
  something changed. It keeps the latest frame, so a new or re-shown page gets it at once.
  Nothing here talks to Ray: the dashboard reads PostgreSQL only.
- Both feed only this process's websockets (the channel layer is in-process), so each change
  reaches each socket once however many web replicas run: every replica LISTENs for itself.

Both start lazily, on the first websocket connection (:func:`ensure_started`), in the
process's own event loop; nothing runs at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.template.loader import render_to_string
from django.utils.html import escape

from organism import status as published
from tasks import queue, selectors
from tasks.sql import listen_forever

log = logging.getLogger("seedcore.dashboard")

TASKS_GROUP = "dashboard.tasks"
HEALTH_GROUP = "dashboard.health"
FLUSH_INTERVAL = 0.3
MAX_IDS_PER_FRAME = 200
MONITOR_INTERVAL = 2.0


# ---------------------------------------------------------------------------------------------
# Coalescing: pure, tested without a loop or a database.


@dataclass
class Batch:
    """What one frame says: which tasks changed (by id, to their latest status), or just
    ``overflow`` when too many changed to list, in which case pages reload their views."""

    statuses: dict[str, str]
    overflow: bool
    total: int

    def to_json(self) -> str:
        return json.dumps(
            {"statuses": self.statuses, "overflow": self.overflow, "total": self.total}
        )

    @classmethod
    def from_json(cls, text: str) -> Batch:
        data = json.loads(text)
        return cls(dict(data["statuses"]), bool(data["overflow"]), int(data["total"]))


@dataclass
class Coalescer:
    interval: float = FLUSH_INTERVAL
    max_ids: int = MAX_IDS_PER_FRAME
    clock: Callable[[], float] = time.monotonic
    _statuses: dict[str, str] = field(default_factory=dict)
    _overflow: bool = False
    _total: int = 0
    _last_flush: float = float("-inf")

    def add(self, changes: Iterable[tuple[str, str]]) -> None:
        """Record (task id, status) changes; a later status of the same task replaces it."""
        for task_id, status in changes:
            self._total += 1
            if self._overflow:
                continue
            self._statuses.pop(task_id, None)
            self._statuses[task_id] = status
            if len(self._statuses) > self.max_ids:
                self._overflow = True
                self._statuses.clear()

    def add_batch(self, batch: Batch) -> None:
        """Fold in a batch coalesced earlier (the frames a slow page has not taken yet)."""
        self.add(batch.statuses.items())
        self._total += batch.total - len(batch.statuses)
        if batch.overflow:
            self._overflow = True
            self._statuses.clear()

    def add_gap(self) -> None:
        """Changes may have been missed (the feed reconnected): pages reload their views."""
        self._total += 1
        self._overflow = True
        self._statuses.clear()

    @property
    def pending(self) -> bool:
        return self._total > 0

    def take(self) -> Batch | None:
        """The batch to send now, or None when nothing is pending or the last frame is too
        recent; taking it empties the coalescer."""
        now = self.clock()
        if not self.pending or now - self._last_flush < self.interval:
            return None
        batch = Batch(dict(self._statuses), self._overflow, self._total)
        self._statuses, self._overflow, self._total = {}, False, 0
        self._last_flush = now
        return batch


def parse_notify_payload(payload: str) -> list[tuple[str, str]]:
    """The (id, status) pairs of one ``seedcore_tasks`` NOTIFY payload; none, logged, for a
    malformed one."""
    changes = queue.parse_notify_payload(payload)
    if changes is None:
        log.warning("ignoring a malformed %s payload: %.200s", queue.NOTIFY_CHANNEL, payload)
        return []
    return changes


def tasks_message(batch: Batch) -> dict[str, str]:
    """The ``tasks.changed`` group message: the frame rendered once for every page, and the
    batch itself for a page whose frames are held back (see :mod:`dashboard.flow`). The batch
    travels as JSON text because the in-memory layer deep-copies each message for every
    member, and copying a string costs nothing."""
    return {"type": "tasks.changed", "html": tasks_frame(batch), "batch": batch.to_json()}


def tasks_frame(batch: Batch) -> str:
    """The websocket frame for a batch: an out-of-band signal element the pages' script reads."""
    ids = " ".join(batch.statuses)
    statuses = escape(json.dumps(batch.statuses))
    return (
        f'<div id="live-tasks" hx-swap-oob="true" data-ids="{escape(ids)}" '
        f'data-statuses="{statuses}" data-overflow="{int(batch.overflow)}" '
        f'data-total="{batch.total}"></div>'
    )


# ---------------------------------------------------------------------------------------------
# The relay


class TaskRelay:
    def __init__(self, using: str = "default"):
        self.using = using
        self.coalescer = Coalescer()
        self.layer = get_channel_layer()
        # After the first LISTEN, a new one follows a lost connection: NOTIFYs sent in
        # between are gone, so the pages are told to reload.
        self._reconnecting = False

    async def run(self) -> None:
        await asyncio.gather(self._feed_forever(), self._flush_forever())

    async def _feed_forever(self) -> None:
        await listen_forever(
            queue.NOTIFY_CHANNEL,
            on_listen=self._listening,
            on_notify=lambda payload: self.coalescer.add(parse_notify_payload(payload)),
            using=self.using,
        )

    def _listening(self) -> None:
        if self._reconnecting:
            self.coalescer.add_gap()
        self._reconnecting = True

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL / 3)
            batch = self.coalescer.take()
            if batch is not None:
                await self.layer.group_send(TASKS_GROUP, tasks_message(batch))


# ---------------------------------------------------------------------------------------------
# The monitor


async def coordinator_snapshot() -> dict[str, Any]:
    """The Coordinator as ``rundispatcher`` last published it (organism.status): healthy or
    why not, ping and organism summary, as plain data. Reads PostgreSQL, never Ray."""
    return published.coordinator_view(await published.aread())


def dispatcher_rows() -> list[dict[str, Any]]:
    """Dispatcher heartbeats with ``alive`` and ``beat_age`` (seconds), by the selector's rule."""
    return selectors.list_dispatchers()


class Monitor:
    def __init__(self, sample: Callable | None = None):
        self.layer = get_channel_layer()
        self.latest: dict[str, Any] | None = None
        self.latest_html: str | None = None
        self._sample = sample or self._sample_live

    async def _sample_live(self) -> dict[str, Any]:
        coordinator, dispatchers = await asyncio.gather(
            coordinator_snapshot(), database_sync_to_async(dispatcher_rows)()
        )
        return {"coordinator": coordinator, "dispatchers": dispatchers}

    async def run(self) -> None:
        """Tick every ``MONITOR_INTERVAL`` (heartbeats age, publications go stale), and at once
        when ``rundispatcher`` announces news (NOTIFY seedcore_health)."""
        news = asyncio.Event()
        listener = asyncio.ensure_future(
            listen_forever(
                published.HEALTH_CHANNEL, on_listen=news.set, on_notify=lambda _: news.set()
            )
        )
        try:
            while True:
                news.clear()
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failed step must not end the monitor
                    log.exception("dashboard monitor step failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(news.wait(), MONITOR_INTERVAL)
        finally:
            listener.cancel()

    async def tick(self) -> bool:
        """Sample once; broadcast and return True if anything shown changed."""
        snapshot = await self._sample()
        # Heartbeat ages tick every second; compare what changes meaning, not the clock.
        if self.latest is not None and _meaning(snapshot) == _meaning(self.latest):
            self.latest = snapshot
            return False
        previous = (self.latest or {}).get("coordinator", {})
        coordinator = snapshot["coordinator"]
        if previous.get("healthy") != coordinator["healthy"]:
            log.info(
                "Coordinator %s%s",
                "healthy" if coordinator["healthy"] else "unhealthy",
                f": {coordinator['error']}" if coordinator["error"] else "",
            )
        self.latest = snapshot
        self.latest_html = health_frame(snapshot)
        await self.layer.group_send(
            HEALTH_GROUP, {"type": "health.changed", "html": self.latest_html}
        )
        return True


def _meaning(snapshot: dict[str, Any]) -> Any:
    coordinator = dict(snapshot["coordinator"])
    ping = coordinator.pop("ping_ms", None)
    coordinator.pop("age", None)  # the report's age ticks; turning stale changes "healthy"
    dispatchers = [
        {k: v for k, v in row.items() if k not in ("last_beat_at", "beat_age")}
        for row in snapshot["dispatchers"]
    ]
    # Ping jitter under 20 ms is noise, not news.
    return coordinator, None if ping is None else round(ping / 20), dispatchers


def health_frame(snapshot: dict[str, Any]) -> str:
    return render_to_string("dashboard/live/health_frame.html", snapshot)


# ---------------------------------------------------------------------------------------------
# Lazy start, once per event loop (daphne runs one; each test has its own)

_running: dict[asyncio.AbstractEventLoop, tuple[TaskRelay, Monitor, list[asyncio.Task]]] = {}


def ensure_started() -> Monitor:
    """Start this process's relay and monitor if they are not running; returns the monitor."""
    loop = asyncio.get_running_loop()
    for other in [other for other in _running if other.is_closed()]:
        del _running[other]
    if loop not in _running:
        relay, monitor = TaskRelay(), Monitor()
        tasks = [
            loop.create_task(relay.run(), name="seedcore-task-relay"),
            loop.create_task(monitor.run(), name="seedcore-monitor"),
        ]
        _running[loop] = (relay, monitor, tasks)
    return _running[loop][1]


def current_monitor() -> Monitor | None:
    """This loop's monitor if one runs (pages use its latest snapshot for their first render)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop in _running:
        return _running[loop][1]
    # A sync view runs in a worker thread: any running monitor in the process will do.
    return next((entry[1] for entry in _running.values()), None)


async def stop() -> None:
    """Stop this loop's relay and monitor (tests, and a clean server shutdown)."""
    entry = _running.pop(asyncio.get_running_loop(), None)
    if entry is None:
        return
    for task in entry[2]:
        task.cancel()
    await asyncio.gather(*entry[2], return_exceptions=True)


def health_context() -> dict[str, Any]:
    """What every page's header needs: the monitor's latest health snapshot, if any."""
    monitor = current_monitor()
    return {"health": monitor.latest if monitor else None}
