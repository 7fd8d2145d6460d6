"""Backoff and max-attempts arithmetic, and retention: pure, no database."""

from datetime import timedelta

import pytest

from tasks.policy import RetentionPolicy, RetryPolicy

POLICY = RetryPolicy(max_attempts=5, backoff_seconds=30.0, backoff_max_steps=10)


@pytest.mark.parametrize(
    ("attempts", "delay"), [(1, 30.0), (2, 60.0), (4, 120.0), (10, 300.0), (11, 300.0), (50, 300.0)]
)
def test_backoff_is_seconds_times_attempts_capped_at_max_steps(attempts, delay):
    assert POLICY.backoff(attempts) == delay


def test_backoff_steps_cap_is_configurable():
    assert RetryPolicy(99, 2.5, 3).backoff(7) == 7.5


@pytest.mark.parametrize("attempts", [1, 2, 3, 4])
def test_failure_below_the_cap_retries_with_backoff(attempts):
    assert POLICY.after_failure(attempts=attempts) == ("RETRY", 30.0 * attempts)


@pytest.mark.parametrize("attempts", [5, 6])
def test_failure_at_or_past_the_cap_fails(attempts):
    assert POLICY.after_failure(attempts=attempts) == ("FAILED", None)


def test_the_tasks_own_cap_wins_over_the_policy():
    assert POLICY.after_failure(attempts=2, task_max_attempts=2) == ("FAILED", None)
    assert POLICY.after_failure(attempts=7, task_max_attempts=8) == ("RETRY", 210.0)


def test_a_permanent_error_fails_at_once():
    assert POLICY.after_failure(attempts=1, permanent=True) == ("FAILED", None)


def test_from_settings_reads_the_queue_tunables(settings):
    settings.SEEDCORE_MAX_ATTEMPTS = 3
    settings.SEEDCORE_BACKOFF_SECONDS = 7.0
    settings.SEEDCORE_BACKOFF_MAX_STEPS = 2
    settings.SEEDCORE_MAX_SYSTEM_RETRIES = 5
    assert RetryPolicy.from_settings() == RetryPolicy(3, 7.0, 2, 5)


def test_policies_read_their_settings(settings):
    settings.SEEDCORE_MAX_ATTEMPTS, settings.SEEDCORE_BACKOFF_SECONDS = 7, 1.5
    settings.SEEDCORE_RETENTION_DAYS, settings.SEEDCORE_FAILED_RETENTION_DAYS = 2, 9
    assert RetryPolicy.from_settings().max_attempts == 7
    assert RetryPolicy.from_settings().backoff_seconds == 1.5
    retention = RetentionPolicy.from_settings()
    assert (retention.finished_days, retention.failed_days) == (2, 9)


def test_retention_keeps_failed_tasks_longer():
    assert RetentionPolicy(finished_days=3, failed_days=30).expiries() == [
        (("COMPLETED", "CANCELLED"), timedelta(days=3)),
        (("FAILED",), timedelta(days=30)),
    ]


def test_a_system_failure_retries_at_once_until_the_system_cap():
    policy = RetryPolicy(3, 30.0, 10, max_system_retries=2)
    assert policy.after_system_failure(system_failures=1) == ("RETRY", 0.0)
    assert policy.after_system_failure(system_failures=2) == ("RETRY", 0.0)
    assert policy.after_system_failure(system_failures=3) == ("FAILED", None)
    # Zero: the first attempt Ray loses fails the task.
    assert RetryPolicy(3, 30.0, 10, 0).after_system_failure(system_failures=1)[0] == "FAILED"
