"""A circuit breaker for the dispatcher's calls to the Coordinator: pure, clock injected.

CLOSED: calls go through; ``threshold`` consecutive failures open the circuit.
OPEN: no calls (the dispatcher stops claiming, so a Coordinator outage cannot burn every
task's attempts) until ``probe_seconds`` have passed; then HALF_OPEN.
HALF_OPEN: one probe may go through; a success closes the circuit, a failure opens it again
for another ``probe_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        probe_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if probe_seconds < 0:
            raise ValueError("probe_seconds must not be negative")
        self.threshold = threshold
        self.probe_seconds = probe_seconds
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.opened_total = 0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self.seconds_until_probe() == 0:
            self._state = CircuitState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allows_calls(self) -> bool:
        """Whether work may go to the Coordinator now (CLOSED only)."""
        return self.state is CircuitState.CLOSED

    def should_probe(self) -> bool:
        """Whether the circuit waits for a probe (HALF_OPEN)."""
        return self.state is CircuitState.HALF_OPEN

    def seconds_until_probe(self) -> float:
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.probe_seconds - self._clock())

    def record_success(self) -> None:
        self._failures = 0
        self._state = CircuitState.CLOSED

    def record_failure(self) -> None:
        self._failures += 1
        if self.state is CircuitState.HALF_OPEN or (
            self._state is CircuitState.CLOSED and self._failures >= self.threshold
        ):
            self._open()

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self.opened_total += 1
