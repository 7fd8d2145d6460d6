"""Flow control for the dashboard websocket: a page has at most ``WINDOW`` frames it has not
acknowledged; what happens meanwhile is merged for it, never queued.

daphne has no backpressure: a frame sent to a page that stopped reading waits in the
server's memory for as long as the connection lives. So each page answers every frame it has
handled with ``ack``, and its :class:`Outbox` holds back whatever comes while ``WINDOW``
frames are unacknowledged: task changes merged by a :class:`~dashboard.live.Coalescer` (a
later status replaces an earlier one; past ``MAX_IDS_PER_FRAME`` ids, just "overflow"), and
health as its newest frame only. A page that never reads costs ``WINDOW`` frames plus
O(``MAX_IDS_PER_FRAME``) ids, whatever the burst; one that reads again catches up with one
merged frame of each kind. Pure: no loop, no socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dashboard.live import Batch, Coalescer, tasks_frame

WINDOW = 4
TASKS = "tasks"
HEALTH = "health"


@dataclass
class Outbox:
    """One connection's window. Each method returns the frames to send now, in order."""

    window: int = WINDOW
    in_flight: int = 0
    _tasks: Coalescer = field(default_factory=lambda: Coalescer(interval=0.0))
    _health: str | None = None
    # The kinds held back, oldest first: when slots free up, each gets one in turn.
    _held: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return bool(self._held)

    def offer_tasks(self, frame: str, batch_json: str) -> list[str]:
        """A ``tasks.changed`` message: its ``frame`` if the window has room, else nothing,
        and ``batch_json`` (the same batch as JSON text) is merged into what is held back."""
        if self._has_room():
            return self._sent(frame)
        if not self._tasks.pending:
            self._held.append(TASKS)
        self._tasks.add_batch(Batch.from_json(batch_json))
        return []

    def offer_health(self, frame: str) -> list[str]:
        """A health frame: sent if the window has room, else kept until there is (the newest
        replaces any older one held back)."""
        if self._has_room():
            return self._sent(frame)
        if self._health is None:
            self._held.append(HEALTH)
        self._health = frame
        return []

    def ack(self) -> list[str]:
        """The page handled a frame: what was held back, merged, as far as the window allows."""
        # More acks than frames (e.g. sent by a page for its previous connection) must not
        # widen the window.
        self.in_flight = max(0, self.in_flight - 1)
        frames: list[str] = []
        while self._held and self.in_flight < self.window:
            kind = self._held.pop(0)
            if kind == TASKS:
                batch = self._tasks.take()
                assert batch is not None  # held means pending; interval 0 never defers
                frames += self._sent(tasks_frame(batch))
            else:
                health, self._health = self._health, None
                assert health is not None
                frames += self._sent(health)
        return frames

    def _has_room(self) -> bool:
        # Nothing overtakes what is held back: it goes first, on the next ack.
        return self.in_flight < self.window and not self._held

    def _sent(self, frame: str) -> list[str]:
        self.in_flight += 1
        return [frame]
