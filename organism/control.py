"""Organism control from the web process: a control task through the queue, waited for.

The web never calls Ray. ``initialize_organism``, ``shutdown_organism``, ``execute_on_organ`` and
``execute_on_random_organ`` travel as ordinary tasks at the top priority: a dispatcher claims
one like any other (NOTIFY wakes it at once), the Coordinator runs it, and the caller polls the
row until it ends. So each control action is also in the task list, with its result or error.

A control task is tried once (an operator retries by asking again), and one that no dispatcher
claimed in time is cancelled: a shutdown asked for while ``rundispatcher`` was down must not
happen when it comes back an hour later.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import transaction

from organism.status import START_HINT
from tasks import audit, queue, selectors
from tasks.models import Status

CONTROL_PRIORITY = 1000  # the highest a task may have: control jumps any backlog
FIRST_POLL = 0.002
LONGEST_POLL = 0.05


class ControlUnavailable(Exception):
    """No dispatcher took the control task in time (the task was cancelled)."""


class ControlTimeout(Exception):
    """A dispatcher took the control task but it did not finish in time (cancel requested)."""


class ControlFailed(Exception):
    """The control task ran and failed; the message is its error."""


def run_control(
    task_type: str,
    params: dict[str, Any] | None = None,
    *,
    actor: audit.Actor,
    timeout: float | None = None,
) -> Any:
    """Queue a control task on ``actor``'s behalf (recorded in the audit trail), wait for it,
    and return its output.

    ``timeout`` defaults to SEEDCORE_COORDINATOR_TIMEOUT. Raises ControlUnavailable,
    ControlTimeout or ControlFailed, each saying what happened and what to do.
    """
    timeout = settings.SEEDCORE_COORDINATOR_TIMEOUT if timeout is None else timeout
    with transaction.atomic():
        task_id = queue.enqueue(
            type=task_type, params=params or {}, priority=CONTROL_PRIORITY, max_attempts=1
        )["id"]
        audit.record(
            actor,
            f"organism.{task_type}",
            target=(params or {}).get("organ_id", ""),
            task_ids=[task_id],
        )
    deadline = time.monotonic() + timeout
    wait = FIRST_POLL
    while True:
        task = selectors.get_task(task_id)
        if task["status"] == Status.COMPLETED:
            return (task["result"] or {}).get("output")
        if task["status"] in (Status.FAILED, Status.CANCELLED):
            raise ControlFailed(task["error"] or f"{task_type} was {task['status'].lower()}")
        if time.monotonic() >= deadline:
            _give_up(task_id, task_type, timeout)
        time.sleep(wait)
        wait = min(wait * 2, LONGEST_POLL)


def _give_up(task_id: str, task_type: str, timeout: float) -> None:
    try:
        task = queue.cancel(task_id)
    except queue.TransitionNotAllowed:
        return  # it finished just now: the caller's next look reads its outcome
    short = task_id[:8]
    if task["status"] == Status.CANCELLED:
        raise ControlUnavailable(
            f"no dispatcher took the {task_type} task ({short}) within {timeout:g} s, so it "
            f"was cancelled; is rundispatcher running? {START_HINT}"
        )
    raise ControlTimeout(
        f"the {task_type} task ({short}) did not finish within {timeout:g} s; its cancel was "
        "requested"
    )
