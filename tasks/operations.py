"""What operators do to tasks, recorded: each action goes through ``tasks.queue``'s rules and
writes its audit entry (``tasks.audit``) in the same transaction.

The dashboard, the admin, the API and the CLI all call these, each naming its ``Actor``; the
queue engine itself knows nothing of who asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from tasks import audit, queue, schedules
from tasks.audit import Actor
from tasks.ids import TaskIdError


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # task id -> why


def submit(spec: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """Queue a task; an organism control type (``shutdown_organism``, …) is recorded, since
    queueing it is organism control. Ordinary submissions are not operator actions."""
    from organism.handlers import CONTROL_TYPES

    with transaction.atomic():
        task = queue.enqueue(**spec)
        if task["type"] in CONTROL_TYPES:
            audit.record(actor, f"organism.{task['type']}", task_ids=[task["id"]])
    return task


def run_now(task_id: str, actor: Actor) -> dict[str, Any]:
    """Queue a FAILED, CANCELLED or RETRY task to run now (``queue.run_now``), recorded."""
    with transaction.atomic():
        task = queue.run_now(task_id)
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
        except (queue.TransitionNotAllowed, TaskIdError, ValueError) as exc:
            outcome.refused[task_id] = str(exc)
        else:
            outcome.done.append(task_id)
    return outcome


# ---------------------------------------------------------------------------------------------
# Schedules (tasks.schedules)


def run_schedule_now(schedule_id: int, actor: Actor) -> str:
    """Enqueue a schedule's task at once; returns the task's id."""
    with transaction.atomic():
        task_id = schedules.run_now(schedule_id)
        name = schedules.Schedule.objects.values_list("name", flat=True).get(pk=schedule_id)
        audit.record(actor, "schedule.run_now", target=name, task_ids=[task_id])
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
