"""Operator actions over many tasks, each task going through the queue engine's own rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tasks import queue
from tasks.ids import TaskIdError


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # task id -> why


def run_now_many(task_ids: Iterable[str]) -> Outcome:
    return _each(queue.run_now, task_ids)


def cancel_many(task_ids: Iterable[str]) -> Outcome:
    return _each(queue.cancel, task_ids)


def _each(action: Callable[[str], object], task_ids: Iterable[str]) -> Outcome:
    """Apply ``action`` to each task; the engine refuses what the task's status forbids."""
    outcome = Outcome()
    for task_id in task_ids:
        try:
            action(task_id)
        except (queue.TransitionNotAllowed, TaskIdError, ValueError) as exc:
            outcome.refused[task_id] = str(exc)
        else:
            outcome.done.append(task_id)
    return outcome
