"""Schedules (periodic tasks): what a schedule must be, when it runs, and enqueueing its runs.

A schedule runs at every *slot*: each time its cron expression matches, in its timezone, or
each multiple of ``interval_seconds`` since the Unix epoch (so an interval's slots are the same
whichever process computes them). ``rundispatcher``'s supervisor calls :func:`enqueue_due`,
which enqueues one task per due slot, exactly once however many supervisors race (see there).

Catch-up, when the supervisor comes by after more than one slot has passed (nothing was running,
or it was late by more than a period): ``skip`` runs none of the missed slots, ``once`` runs one
task for all of them; either way the next run is the first slot after now. A slot reached
before the following one is due is not missed, and runs.

Daylight saving time follows Debian's cron (the library, cronsim, does): on a spring-forward
day a 02:30 run that does not exist runs at 03:00, right after the clock change; on a
fall-back day a 02:30 that happens twice runs once, the first time.

Operator actions (Run now, Pause, Resume) are one function each here, for the admin, the
dashboard and anything else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone as django_timezone

from tasks import queue
from tasks.models import CatchUp, Schedule, ScheduleRun
from tasks.sql import fetch
from tasks.validation import InvalidTask, validate_task_spec

log = logging.getLogger("seedcore.schedules")

MAX_NAME_LENGTH = 200
# A year: a longer period is a cron expression's job.
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
# Schedules one call of enqueue_due handles at most (each in its own short transaction).
DUE_BATCH = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Schedule IDs are PostgreSQL bigints: a larger number names no schedule (and must not reach
# the database, which would refuse it with an error).
MAX_ID = 2**63 - 1


class InvalidSchedule(ValueError):
    """A schedule the rules refuse; ``errors`` maps each field at fault to what is wrong."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


class ScheduleNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Timing:
    """When a schedule runs: a cron expression in a timezone, or an interval."""

    cron: str = ""
    interval_seconds: int | None = None
    timezone: str = "UTC"

    @classmethod
    def of(cls, schedule: Schedule) -> Timing:
        return cls(schedule.cron, schedule.interval_seconds, schedule.timezone)


# ---------------------------------------------------------------------------------------------
# Validation


def validate_schedule(values: Mapping[str, Any]) -> None:
    """Check a schedule's fields; raise :class:`InvalidSchedule` naming each field at fault.

    ``values`` holds ``name``, ``type``, ``params``, ``priority``, ``cron``,
    ``interval_seconds``, ``timezone`` and ``catch_up``. The task it enqueues is checked by
    the same rules as any new task (``tasks.validation``).
    """
    errors: dict[str, str] = {}
    name = values.get("name") or ""
    if not name.strip():
        errors["name"] = "a schedule needs a name"
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = f"at most {MAX_NAME_LENGTH} characters"
    task_fields = {key: values.get(key) for key in ("type", "params", "priority")}
    try:
        validate_task_spec({key: value for key, value in task_fields.items() if value is not None})
    except InvalidTask as exc:
        errors.update(exc.errors)
    if not isinstance(values.get("params", {}), dict):
        errors["params"] = "must be a JSON object"
    cron = (values.get("cron") or "").strip()
    interval = values.get("interval_seconds")
    if cron and interval is not None:
        errors["interval_seconds"] = "give a cron expression or an interval, not both"
    elif not cron and interval is None:
        errors["cron"] = "give a cron expression or an interval (interval_seconds)"
    elif interval is not None and not 1 <= interval <= MAX_INTERVAL_SECONDS:
        errors["interval_seconds"] = f"must be between 1 and {MAX_INTERVAL_SECONDS} seconds"
    elif cron:
        problem = cron_problem(cron)
        if problem:
            errors["cron"] = problem
    try:
        ZoneInfo(values.get("timezone") or "")
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = "not a known IANA timezone, e.g. UTC or Europe/Berlin"
    if values.get("catch_up") not in CatchUp.values:
        errors["catch_up"] = f"must be one of {', '.join(CatchUp.values)}"
    if errors:
        raise InvalidSchedule(errors)


def cron_problem(cron: str) -> str | None:
    """Why ``cron`` is not a cron expression cronsim takes, or None."""
    try:
        CronSim(cron, datetime.now(UTC))
    except CronSimError as exc:
        return f"not a valid cron expression ({exc}); e.g. '*/5 * * * *' or '30 2 * * MON'"
    return None


def check_model(schedule: Schedule) -> None:
    """``Schedule.clean()``: the rules as Django's ValidationError, field by field."""
    from django.core.exceptions import ValidationError

    try:
        validate_schedule(_values(schedule))
    except InvalidSchedule as exc:
        raise ValidationError(exc.errors) from None


# The fields validate_schedule reads.
FIELDS = (
    "name",
    "type",
    "params",
    "priority",
    "cron",
    "interval_seconds",
    "timezone",
    "catch_up",
)


def _values(schedule: Schedule) -> dict[str, Any]:
    return {name: getattr(schedule, name) for name in FIELDS}


# ---------------------------------------------------------------------------------------------
# Slots (pure)


def next_slot(timing: Timing, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (aware), in UTC."""
    if timing.interval_seconds:
        period = timing.interval_seconds
        elapsed = (after - _EPOCH).total_seconds()
        slots = math.floor(elapsed / period) + 1
        return _EPOCH + timedelta(seconds=slots * period)
    local = after.astimezone(ZoneInfo(timing.timezone))
    return next(CronSim(timing.cron, local)).astimezone(UTC)


@dataclass(frozen=True)
class Plan:
    """What to do with a schedule whose slot ``next_run_at`` is due."""

    run: bool  # enqueue a task for that slot
    next_run_at: datetime  # the slot after


def plan_due(timing: Timing, catch_up: str, due: datetime, now: datetime) -> Plan:
    """The decision for the due slot ``due`` at ``now`` (pure).

    If the following slot is still ahead, ``due`` is simply due: it runs. Otherwise slots were
    missed: ``skip`` runs none, ``once`` runs one for all; the next run is the first slot after
    ``now``.
    """
    following = next_slot(timing, due)
    if following > now:
        return Plan(run=True, next_run_at=following)
    return Plan(run=catch_up == CatchUp.ONCE, next_run_at=next_slot(timing, now))


# ---------------------------------------------------------------------------------------------
# Enqueueing due runs: the supervisor's job


def enqueue_due(now: datetime | None = None, *, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Enqueue a task for each enabled schedule whose ``next_run_at`` has come; returns the
    new tasks' ids.

    Exactly once per slot, however many supervisors call this at the same time and wherever
    one of them dies: each schedule is handled in ONE transaction that locks its row
    (``FOR UPDATE SKIP LOCKED``: a racing supervisor skips it rather than waits), inserts the
    task and its run, and moves ``next_run_at`` past the slot. A racer that reads the row after
    the commit no longer finds it due (PostgreSQL re-checks a locked row's WHERE against its
    committed version); a crash before the commit leaves neither task nor run, and the slot
    still due. The run's unique (schedule, slot) key is the last guard: a second task for one
    slot would break it and roll its transaction back, so even a ``next_run_at`` set back by
    hand does not run a slot twice.
    """
    now = now or django_timezone.now()
    enqueued: list[str] = []
    for _ in range(DUE_BATCH):
        with transaction.atomic(using=using):
            schedule = (
                Schedule.objects.using(using)
                .select_for_update(skip_locked=True)
                .filter(enabled=True, next_run_at__lte=now)
                .order_by("next_run_at")
                .first()
            )
            if schedule is None:
                break
            task_id = _run_due(schedule, now, using=using)
        if task_id:
            enqueued.append(task_id)
    return enqueued


def _run_due(schedule: Schedule, now: datetime, *, using: str) -> str | None:
    due = schedule.next_run_at
    try:
        plan = plan_due(Timing.of(schedule), schedule.catch_up, due, now)
    except (CronSimError, ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        # A timing written around the rules (by SQL): paused, so it cannot hold up the others
        # by failing first in every round; fixing it in the admin and resuming starts it again.
        log.warning("schedule %r paused: its timing is invalid (%s)", schedule.name, exc)
        Schedule.objects.using(using).filter(pk=schedule.pk).update(enabled=False, next_run_at=None)
        return None
    already_ran = ScheduleRun.objects.using(using).filter(schedule=schedule, slot=due).exists()
    task_id = None
    if plan.run and not already_ran:
        task_id = _enqueue_run(schedule, slot=due, using=using)
    _mark(schedule, task_id, now=now, next_run_at=plan.next_run_at, using=using)
    return task_id


def _enqueue_run(schedule: Schedule, *, slot: datetime | None, using: str) -> str:
    """Insert the schedule's task and its run row (in the caller's transaction)."""
    description = f"schedule {schedule.name}" + (f" · {slot.isoformat()}" if slot else " · run now")
    task_id = queue.enqueue_many(
        [
            {
                "type": schedule.type,
                "params": schedule.params,
                "priority": schedule.priority,
                "description": description,
            }
        ],
        using=using,
    )[0]
    fetch(
        "INSERT INTO schedule_runs (schedule_id, slot, task_id) VALUES (%s, %s, %s)",
        [schedule.pk, slot, task_id],
        using=using,
    )
    return task_id


def _mark(
    schedule: Schedule,
    task_id: str | None,
    *,
    now: datetime,
    next_run_at: datetime | None = None,
    keep_next: bool = False,
    using: str,
) -> None:
    changes: dict[str, Any] = {}
    if not keep_next:
        changes["next_run_at"] = next_run_at
    if task_id:
        changes.update(last_run_at=now, last_task_id=task_id)
    if changes:
        Schedule.objects.using(using).filter(pk=schedule.pk).update(**changes)


def earliest_next_run(*, using: str = DEFAULT_DB_ALIAS) -> datetime | None:
    """When the next enabled schedule is due (the supervisor sleeps until then)."""
    first = (
        Schedule.objects.using(using)
        .filter(enabled=True, next_run_at__isnull=False)
        .order_by("next_run_at")
        .values_list("next_run_at", flat=True)
        .first()
    )
    return first


# The supervisor never spins faster than this, even when a schedule is due again at once.
MIN_SLEEP_SECONDS = 0.05


def seconds_until(earliest: datetime | None, now: datetime, *, cap: float) -> float:
    """How long the supervisor may sleep before the next run is due: until ``earliest``, at
    most ``cap`` (a schedule made meanwhile is found within ``cap``), at least a moment."""
    if earliest is None:
        return cap
    return max(MIN_SLEEP_SECONDS, min(cap, (earliest - now).total_seconds()))


# ---------------------------------------------------------------------------------------------
# Saving and operator actions: one function each


def save(schedule: Schedule, *, timing_changed: bool = True) -> Schedule:
    """Save a schedule made or edited by hand (the admin); a new timing, or a schedule just
    made, starts at its first slot after now (no catch-up for an edit)."""
    validate_schedule(_values(schedule))
    if schedule.enabled and (timing_changed or schedule.next_run_at is None):
        schedule.next_run_at = next_slot(Timing.of(schedule), django_timezone.now())
    elif not schedule.enabled:
        schedule.next_run_at = None
    schedule.save()
    return schedule


def _locked(schedule_id: int, using: str) -> Schedule:
    if not isinstance(schedule_id, int) or not 1 <= schedule_id <= MAX_ID:
        raise ScheduleNotFound(f"no schedule with ID {schedule_id}")
    try:
        return Schedule.objects.using(using).select_for_update().get(pk=schedule_id)
    except (Schedule.DoesNotExist, ValueError, TypeError):
        raise ScheduleNotFound(f"no schedule with ID {schedule_id}") from None


def run_now(schedule_id: int, *, using: str = DEFAULT_DB_ALIAS) -> str:
    """Enqueue the schedule's task at once (paused or not); its slots are left as they are.
    Returns the task's id."""
    with transaction.atomic(using=using):
        schedule = _locked(schedule_id, using)
        task_id = _enqueue_run(schedule, slot=None, using=using)
        _mark(schedule, task_id, now=django_timezone.now(), keep_next=True, using=using)
    return task_id


def pause(schedule_id: int, *, using: str = DEFAULT_DB_ALIAS) -> Schedule:
    """Stop enqueueing the schedule's runs (Run now still works)."""
    with transaction.atomic(using=using):
        schedule = _locked(schedule_id, using)
        schedule.enabled = False
        schedule.next_run_at = None
        schedule.save(update_fields=["enabled", "next_run_at"])
    return schedule


def resume(schedule_id: int, *, using: str = DEFAULT_DB_ALIAS) -> Schedule:
    """Enqueue the schedule's runs again from its first slot after now: slots that passed
    while it was paused are not caught up (it was paused on purpose)."""
    with transaction.atomic(using=using):
        schedule = _locked(schedule_id, using)
        if not schedule.enabled:
            schedule.enabled = True
            schedule.next_run_at = next_slot(Timing.of(schedule), django_timezone.now())
            schedule.save(update_fields=["enabled", "next_run_at"])
    return schedule
