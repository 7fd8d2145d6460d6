"""How much a dispatcher claims at once: adapted to the backlog, so nobody has to tune it.

A claim's round trip, the Coordinator call and the agents' calls each cost about the same
whether they carry one task or hundreds, so under load the fast way is few, large batches;
when the queue is shallow a claim returns what is there, whatever it asked for. So:

- the batch doubles after a claim that came back full (the queue is deeper than the batch),
  up to :data:`MAX_CLAIM_BATCH`, and falls back to twice what a short claim found;
- while the queue is deep, a dispatcher with fewer free slots than half a batch waits for
  more to free up instead of claiming a sliver: otherwise, once its in-flight bound is
  reached, each outcome written would free a slot or two and every later claim, Coordinator
  call and agent call would carry a handful of tasks.

``SEEDCORE_CLAIM_BATCH``, when set, fixes the batch instead (an override for tuning).
Plain Python: no Ray, no database.
"""

from __future__ import annotations

MIN_CLAIM_BATCH = 16
MAX_CLAIM_BATCH = 512


class ClaimSizer:
    """The next claim's size, from what the previous claims found."""

    def __init__(self, fixed: int | None = None):
        self.fixed = fixed
        self.batch = fixed or MIN_CLAIM_BATCH
        self.deep = False  # the last claim came back full: more is waiting

    def wanted(self, free: int, in_flight: int) -> int:
        """How many to claim with ``free`` slots while ``in_flight`` tasks run; 0 means wait
        for slots to free up first (only ever while something is in flight to free them)."""
        if free <= 0:
            return 0
        if self.deep and self.fixed is None and in_flight and free * 2 < self.batch:
            return 0
        return min(self.batch, free)

    def claimed(self, asked: int, got: int) -> None:
        """Record a claim that asked for ``asked`` and got ``got``."""
        self.deep = got >= asked
        if self.fixed is not None:
            return
        if self.deep:
            self.batch = min(self.batch * 2, MAX_CLAIM_BATCH)
        else:
            self.batch = max(MIN_CLAIM_BATCH, min(self.batch, got * 2))
