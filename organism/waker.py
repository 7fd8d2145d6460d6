"""What wakes an idle dispatcher: PostgreSQL's NOTIFY of a claimable task, shared out so that
one dispatcher, not all of them, claims each new task at once.

Every insert and status change of a task sends its id and status on ``seedcore_tasks``
(``tasks.queue.NOTIFY_CHANNEL``), and every dispatcher listens. If each one claimed on each
NOTIFY, a task inserted while they are idle would be raced for by all of them: their claims
run at once on the same cores, every claim but one comes back empty, and the winner's start
is slower for it (about 0.3 ms of a 4 ms start on two cores, with two dispatchers).

So each task id falls to one dispatcher (:func:`owner`), which claims at once. The others note
the id and wait: the NOTIFY of its claim (its status leaves QUEUED) tells them it was taken;
if none comes within ``fallback_seconds`` (its owner is busy, stopped or gone), they claim
too. A task is never left to the poll interval because of whom it fell to.
"""

from __future__ import annotations

import asyncio
import contextlib

FALLBACK_SECONDS = 0.05
# A dispatcher that knows of this many tasks it did not claim is behind a backlog: it claims
# rather than track more of them.
MAX_TRACKED = 1000


def owner(task_id: str, peers: int) -> int:
    """The index (0 … peers-1) of the dispatcher that claims ``task_id`` first. Task ids are
    random UUIDs, so their last hex digits share the tasks out evenly."""
    return int(task_id[-8:], 16) % peers


class NotifyWaker:
    """Wake when PostgreSQL announces a claimable task that falls to this dispatcher (or that
    no other dispatcher claimed in time), a resume (``tasks.queue.WAKE_PAYLOAD``), or on
    timeout.

    The dispatcher waits with its poll interval as the timeout, so polling remains only as a
    safety net: for a NOTIFY lost while the listening connection (async psycopg, separate from
    the queue's connections) was down and being reconnected.
    """

    def __init__(
        self,
        using: str = "default",
        *,
        index: int = 0,
        peers: int = 1,
        fallback_seconds: float = FALLBACK_SECONDS,
    ):
        self._using = using
        self._index = index
        self._peers = max(peers, 1)
        self._fallback = fallback_seconds
        self._claimable = asyncio.Event()
        self._listener: asyncio.Task | None = None
        # Claimable tasks that fell to other dispatchers, by id: when to claim them anyway.
        self._others: dict[str, float] = {}
        self._fallback_timer: asyncio.TimerHandle | None = None

    async def __call__(self, timeout: float) -> bool:
        """Wait until woken (True) or ``timeout`` seconds (False)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._claimable.wait(), timeout)
        woken = self._claimable.is_set()
        self._claimable.clear()
        return woken

    async def _listen(self) -> None:
        from tasks.queue import NOTIFY_CHANNEL
        from tasks.sql import listen_forever

        await listen_forever(
            NOTIFY_CHANNEL,
            # Tasks queued before LISTEN took effect are found by the next claim.
            on_listen=self._claimable.set,
            on_notify=self._notified,
            using=self._using,
        )

    def _notified(self, payload: str) -> None:
        from tasks.queue import WAKE_PAYLOAD, parse_notify_payload

        if payload == WAKE_PAYLOAD:  # the queue's controls loosened (a resume)
            self._claimable.set()
            return
        if '"QUEUED"' not in payload and '"RETRY"' not in payload and not self._others:
            return  # nothing became claimable, and nothing awaits a claim
        if self._peers == 1:
            self._claimable.set()
            return
        changes = parse_notify_payload(payload)
        if changes is None:
            self._claimable.set()  # not the triggers' format: look rather than miss a task
            return
        self._sort(changes)

    def _sort(self, changes: list[tuple[str, str]]) -> None:
        from tasks.models import CLAIMABLE_STATUSES

        deadline = asyncio.get_running_loop().time() + self._fallback
        for task_id, status in changes:
            if status not in CLAIMABLE_STATUSES:
                self._others.pop(task_id, None)  # claimed (or ended): nothing to wait for
            elif owner(task_id, self._peers) == self._index:
                self._claimable.set()
            else:
                self._others[task_id] = deadline
        if len(self._others) > MAX_TRACKED:
            self._others.clear()
            self._claimable.set()
        if self._fallback_timer is None:
            self._schedule_fallback()

    def _fallback_due(self) -> None:
        self._fallback_timer = None
        now = asyncio.get_running_loop().time()
        overdue = [task_id for task_id, deadline in self._others.items() if deadline <= now]
        for task_id in overdue:
            del self._others[task_id]
        if overdue:
            self._claimable.set()  # unclaimed by the dispatcher each fell to: claim them here
        self._schedule_fallback()

    def _schedule_fallback(self) -> None:
        if self._others:
            self._fallback_timer = asyncio.get_running_loop().call_at(
                min(self._others.values()), self._fallback_due
            )

    def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self._fallback_timer is not None:
            self._fallback_timer.cancel()
