"""How a task row reads as Django's TaskResult, and which exception a traceback names
(tasks/backends.py), without a database."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime, timedelta

import pytest
from django_tasks import TaskResultStatus

from tasks.backends import AttemptFailed, exception_class_path, result_from_row
from tests.taskapp import tasks as app

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _formatted(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as raised:
        return "".join(traceback.format_exception(raised))


class Custom(Exception):
    pass


def test_the_exception_a_traceback_ends_with():
    assert exception_class_path(_formatted(ValueError("x"))) == "builtins.ValueError"
    assert exception_class_path(_formatted(Custom("a\nb: c"))) == f"{__name__}.Custom"
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise Custom("outer") from inner
    except Custom as outer:
        chained = "".join(traceback.format_exception(outer))
    assert exception_class_path(chained) == f"{__name__}.Custom"
    assert exception_class_path("timed out after 5 s") is None
    assert exception_class_path("") is None


def _row(**fields):
    row = {
        "id": "0b6f1e4e-0000-4000-8000-000000000000",
        "status": "QUEUED",
        "type": "tests.taskapp.tasks.add",
        "params": {"args": [1], "kwargs": {"b": 2}},
        "attempts": 0,
        "priority": 0,
        "domain": None,
        "locked_by": None,
        "locked_at": None,
        "created_at": T0,
        "updated_at": T0,
        "result": None,
        "error_history": [],
    }
    row.update(fields)
    return row


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("QUEUED", TaskResultStatus.READY),
        ("RETRY", TaskResultStatus.READY),
        ("RUNNING", TaskResultStatus.RUNNING),
        ("COMPLETED", TaskResultStatus.SUCCESSFUL),
        ("FAILED", TaskResultStatus.FAILED),
        ("CANCELLED", TaskResultStatus.FAILED),
    ],
)
def test_statuses(status, expected):
    assert result_from_row(_row(status=status), app.add).status == expected


def test_a_task_that_failed_once_then_succeeded():
    started, finished = T0 + timedelta(seconds=5), T0 + timedelta(seconds=6)
    row = _row(
        status="COMPLETED",
        attempts=2,
        locked_by="seedcore_dispatcher_1-abc",
        locked_at=started,
        updated_at=finished,
        result={"output": 3, "routing": {"agent_id": "utility_organ_1_agent_0"}},
        error_history=[
            {
                "attempt": 1,
                "error": "ValueError: no",
                "traceback": _formatted(ValueError("no")),
                "dispatcher": "seedcore_dispatcher_0-def",
            }
        ],
    )
    result = result_from_row(row, app.add)
    assert result.return_value == 3
    assert result.worker_ids == [
        "seedcore_dispatcher_0-def",
        "seedcore_dispatcher_1-abc/utility_organ_1_agent_0",
    ]
    assert result.attempts == 2
    [error] = result.errors
    assert error.exception_class is ValueError and "ValueError: no" in error.traceback
    assert (result.enqueued_at, result.started_at, result.last_attempted_at) == (
        T0,
        started,
        started,
    )
    assert result.finished_at == finished
    assert (result.args, result.kwargs) == ([1], {"b": 2})


def test_an_attempt_seedcore_ended_itself_reads_as_attempt_failed():
    row = _row(
        status="FAILED",
        attempts=1,
        locked_at=T0,
        error_history=[{"error": "timed out after 5 s", "traceback": "", "dispatcher": "d"}],
    )
    [error] = result_from_row(row, app.add).errors
    assert error.exception_class is AttemptFailed
    assert error.traceback == "timed out after 5 s"


def test_the_row_s_priority_and_domain_become_the_task_s():
    result = result_from_row(_row(priority=9), app.add)
    assert (result.task.priority, result.task.queue_name) == (9, "default")
    assert result.task.func is app.add.func
    # Out of the contract's range (an operator's edit): the task's own priority stays.
    assert result_from_row(_row(priority=500), app.add).task.priority == 0
