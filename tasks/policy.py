"""Pure retry decisions: what a failed attempt leads to, with no database in sight."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_seconds: float
    backoff_max_steps: int

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(
            max_attempts=settings.SEEDCORE_MAX_ATTEMPTS,
            backoff_seconds=settings.SEEDCORE_BACKOFF_SECONDS,
            backoff_max_steps=settings.SEEDCORE_BACKOFF_MAX_STEPS,
        )

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before the next attempt: backoff × min(attempts, max steps)."""
        return self.backoff_seconds * min(max(attempts, 1), self.backoff_max_steps)

    def after_failure(
        self, *, attempts: int, task_max_attempts: int | None = None, permanent: bool = False
    ) -> tuple[str, float | None]:
        """("RETRY", delay seconds) or ("FAILED", None) for an attempt that just failed.

        ``attempts`` is the number of the attempt that failed (1 for the first run);
        ``task_max_attempts`` is the task's own cap, which wins over the policy's.
        """
        cap = task_max_attempts if task_max_attempts is not None else self.max_attempts
        if permanent or attempts >= cap:
            return "FAILED", None
        return "RETRY", self.backoff(attempts)
