"""Every operator action, checked and recorded: run now and cancel (one task or many), acting on
all that match, a schedule's run now / pause / resume, and the queue's pause / resume / limit.
Each goes through its engine's rules (``tasks.queue``, ``tasks.bulk``, ``tasks.schedules``) and
writes its audit entry (``tasks.audit``) in the same transaction.

The dashboard, the admin, the API and the CLI all call these, each naming its ``Actor`` (with the
scope its request was granted: running an organism control task again needs the organism
admin's); the engines themselves know nothing of who asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from tasks import audit, bulk, idempotency, permissions, queue, schedules, selectors
from tasks.audit import Actor
from tasks.auth import ScopeTooNarrow
from tasks.ids import TaskIdError


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # task id -> why


def submit(
    spec: dict[str, Any], actor: Actor, *, idempotency_key: tuple[int, str] | None = None
) -> queue.Submitted:
    """Queue a task (``queue.submit``: a held ``unique_key`` answers its holder), or with
    ``idempotency_key`` (the caller's user id and key) answer the task an earlier request with
    that key made (``tasks.idempotency``). A new task of an organism control type
    (``shutdown_organism``, …) is recorded, since queueing it is organism control. Ordinary
    submissions are not operator actions."""
    from organism.handlers import CONTROL_TYPES

    with transaction.atomic():
        if idempotency_key is None:
            submitted = queue.submit(**spec)
        else:
            user_id, key = idempotency_key
            submitted = idempotency.submit_once(user_id=user_id, key=key, spec=spec)
        task = submitted.task
        if submitted.created and task["type"] in CONTROL_TYPES:
            audit.record(actor, f"organism.{task['type']}", task_ids=[task["id"]])
    return submitted


def may_run(actor: Actor, task_type: str) -> None:
    """Raise ScopeTooNarrow unless ``actor`` may make a task of ``task_type`` run: running an
    organism control type again (or a schedule of one) is organism control."""
    refusal = permissions.submit_refusal(actor.scope, task_type)
    if refusal:
        raise ScopeTooNarrow(f"{refusal}: {task_type} is an organism control type")


def run_now(task_id: str, actor: Actor) -> dict[str, Any]:
    """Queue a FAILED, CANCELLED or RETRY task to run now (``queue.run_now``), recorded."""
    with transaction.atomic():
        task = queue.run_now(task_id)
        may_run(actor, task["type"])  # refused: the transaction rolls the run back
        audit.record(actor, "task.run_now", task_ids=[task["id"]], target=task["type"])
    return task


def cancel(task_id: str, actor: Actor) -> dict[str, Any]:
    """Cancel a task (``queue.cancel``), recorded."""
    with transaction.atomic():
        task = queue.cancel(task_id)
        audit.record(actor, "task.cancel", task_ids=[task["id"]], target=task["type"])
    return task


def run_now_many(task_ids: Iterable[str], actor: Actor) -> Outcome:
    return _each(run_now, task_ids, actor)


def cancel_many(task_ids: Iterable[str], actor: Actor) -> Outcome:
    return _each(cancel, task_ids, actor)


def _each(action: Callable[[str, Actor], object], task_ids: Iterable[str], actor: Actor) -> Outcome:
    """Apply ``action`` to each task on its own; the engine refuses what a status forbids."""
    outcome = Outcome()
    for task_id in task_ids:
        try:
            action(task_id, actor)
        except (queue.TransitionNotAllowed, TaskIdError, ScopeTooNarrow, ValueError) as exc:
            outcome.refused[task_id] = str(exc)
        else:
            outcome.done.append(task_id)
    return outcome


# ---------------------------------------------------------------------------------------------
# Acting on every task matching a filter (tasks.bulk)


def start_bulk(
    action: str,
    task_filter: selectors.TaskFilter,
    actor: Actor,
    *,
    snapshot_at: datetime | None = None,
) -> bulk.BulkAction:
    """Start cancelling or retrying all that match; recorded with its filter and count. A retry
    that would re-run organism control tasks needs the organism admin's scope."""
    if action == "retry":
        for task_type in _control_types_matching(task_filter):
            may_run(actor, task_type)
    with transaction.atomic():
        started = bulk.start(action, task_filter, snapshot_at=snapshot_at, requested_by=actor.name)
        audit.record(
            actor,
            f"tasks.{action}_matching",
            target=f"{started.total:,} task(s)",
            detail={"filter": started.filter, "count": started.total, "bulk_action": started.pk},
        )
    return started


def _control_types_matching(task_filter: selectors.TaskFilter) -> list[str]:
    from organism.handlers import CONTROL_TYPES

    return selectors.types_matching(task_filter, among=CONTROL_TYPES)


def resume_bulk(bulk_id: int, actor: Actor) -> bulk.BulkAction:
    """Continue an interrupted action on all that match."""
    with transaction.atomic():
        resumed = bulk.resume(bulk_id)
        audit.record(
            actor,
            f"tasks.{resumed.action}_matching_continued",
            target=f"bulk action {bulk_id}",
            detail={"bulk_action": bulk_id, "done": resumed.done, "skipped": resumed.skipped},
        )
    return resumed


# ---------------------------------------------------------------------------------------------
# Schedules (tasks.schedules)


def run_schedule_now(schedule_id: int, actor: Actor) -> str:
    """Enqueue a schedule's task at once; returns the task's id."""
    with transaction.atomic():
        task_id = schedules.run_now(schedule_id)
        schedule = schedules.Schedule.objects.only("name", "type").get(pk=schedule_id)
        may_run(actor, schedule.type)  # refused: the transaction rolls the run back
        audit.record(actor, "schedule.run_now", target=schedule.name, task_ids=[task_id])
    return task_id


def pause_schedule(schedule_id: int, actor: Actor) -> schedules.Schedule:
    with transaction.atomic():
        schedule = schedules.pause(schedule_id)
        audit.record(actor, "schedule.pause", target=schedule.name)
    return schedule


def resume_schedule(schedule_id: int, actor: Actor) -> schedules.Schedule:
    with transaction.atomic():
        schedule = schedules.resume(schedule_id)
        audit.record(actor, "schedule.resume", target=schedule.name)
    return schedule


# ---------------------------------------------------------------------------------------------
# The queue's controls (tasks.queue): pause, resume, concurrency limits


def pause_queue(task_type: str | None, actor: Actor) -> dict[str, Any]:
    """Pause claiming of ``task_type``, or of every type with None; returns the control."""
    with transaction.atomic():
        control = queue.pause(task_type)
        audit.record(actor, "queue.pause", target=task_type or "all types")
    return control


def resume_queue(task_type: str | None, actor: Actor) -> dict[str, Any]:
    """Resume claiming of ``task_type``, or of every type with None (dispatchers wake)."""
    with transaction.atomic():
        control = queue.resume(task_type)
        audit.record(actor, "queue.resume", target=task_type or "all types")
    return control


def set_concurrency_limit(task_type: str, limit: int | None, actor: Actor) -> dict[str, Any]:
    """Override how many tasks of ``task_type`` run at once (None clears the override)."""
    with transaction.atomic():
        control = queue.set_concurrency_limit(task_type, limit)
        audit.record(actor, "queue.limit", target=task_type, detail={"limit": limit})
    return control
