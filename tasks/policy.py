"""Pure queue policies, with no database in sight: what a failed attempt leads to (retry), how
long finished tasks are kept (retention), and how much of a failure is kept (caps)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Self

from django.conf import settings

from tasks.models import FINISHED_STATUSES, Status


class _FromSettings:
    # Each field of the policy, and the setting it is read from.
    SETTINGS: ClassVar[dict[str, str]]

    @classmethod
    def from_settings(cls) -> Self:
        return cls(**{field: getattr(settings, name) for field, name in cls.SETTINGS.items()})


@dataclass(frozen=True)
class RetryPolicy(_FromSettings):
    max_attempts: int
    backoff_seconds: float
    backoff_max_steps: int
    # Attempts Ray may lose (SYSTEM failures) and have retried at once; they do not count
    # against max_attempts.
    max_system_retries: int = 3

    SETTINGS = {
        "max_attempts": "SEEDCORE_MAX_ATTEMPTS",
        "backoff_seconds": "SEEDCORE_BACKOFF_SECONDS",
        "backoff_max_steps": "SEEDCORE_BACKOFF_MAX_STEPS",
        "max_system_retries": "SEEDCORE_MAX_SYSTEM_RETRIES",
    }

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

    def after_system_failure(self, *, system_failures: int) -> tuple[str, float | None]:
        """("RETRY", 0.0): at once, or ("FAILED", None) once Ray has lost more attempts than
        ``max_system_retries``; ``system_failures`` counts the one just lost."""
        if system_failures > self.max_system_retries:
            return "FAILED", None
        return "RETRY", 0.0


@dataclass(frozen=True)
class RetentionPolicy(_FromSettings):
    """How long finished tasks are kept, and how much one pruning round may delete
    (``tasks.queue.prune_expired`` runs a round; ``tasks.idempotency.prune_expired`` deletes
    expired Idempotency-Keys in the same batches)."""

    finished_days: float = 7.0  # COMPLETED and CANCELLED
    failed_days: float = 30.0
    audit_days: float = 365.0  # the audit trail (tasks.audit)
    interval_seconds: float = 300.0
    batch_size: int = 500
    max_batches: int = 20

    SETTINGS = {
        "finished_days": "SEEDCORE_RETENTION_DAYS",
        "failed_days": "SEEDCORE_FAILED_RETENTION_DAYS",
        "audit_days": "SEEDCORE_AUDIT_RETENTION_DAYS",
        "interval_seconds": "SEEDCORE_PRUNE_INTERVAL_SECONDS",
        "batch_size": "SEEDCORE_PRUNE_BATCH",
        "max_batches": "SEEDCORE_PRUNE_MAX_BATCHES",
    }

    def expiries(self) -> list[tuple[tuple[str, ...], timedelta]]:
        """(finished statuses, age): tasks in those statuses unchanged for that long may go.
        FAILED tasks are kept longer than the other finished ones."""
        others = tuple(status.value for status in FINISHED_STATUSES if status != Status.FAILED)
        return [
            (others, timedelta(days=self.finished_days)),
            ((Status.FAILED.value,), timedelta(days=self.failed_days)),
        ]


# How much of a failure a task keeps: a handler's error text and traceback are cut to these
# lengths, and error_history (which grows with every run-now) keeps only its newest entries.
ERROR_MAX_CHARS = 10_000
TRACEBACK_MAX_CHARS = 50_000
ERROR_HISTORY_MAX_ENTRIES = 50
# A task's runs keep their newest entries, each log cut at organism.capture.LOG_MAX_CHARS.
RUNS_MAX_ENTRIES = 50


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text) - limit:,} more characters]"
