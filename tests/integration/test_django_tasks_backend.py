"""SeedCore as a backend of Django's Tasks framework, on PostgreSQL, with an in-process agent
(no Ray): the rows ``.enqueue()`` writes, the results ``get_result`` reads back, and how an
agent runs a ``@task`` by its import path."""

from __future__ import annotations

import asyncio
import math
import sys
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django_tasks import TaskResultStatus, default_task_backend, task_backends
from django_tasks.exceptions import TaskResultDoesNotExist

from organism.agent import Agent
from organism.handlers import get_handler
from organism.messages import OutcomeStatus, TaskPayload
from tasks import queue, selectors
from tasks.backends import AttemptFailed, SeedCoreBackend
from tasks.models import Task
from tests.taskapp import tasks as app

pytestmark = pytest.mark.django_db(transaction=True)


def _run_on_agent(task_id: str, dispatcher: str = "d1"):
    """Claim the task and run it on an in-process agent, as a dispatcher and the organism
    would; write its outcome back. Returns the outcome."""
    (claimed,) = queue.claim(dispatcher=dispatcher, batch=1)
    assert claimed["id"] == task_id
    outcome = asyncio.run(Agent("agent-1", "organ-1").run(TaskPayload.from_claim(claimed)))
    if outcome.ok:
        queue.complete(
            task_id=task_id, dispatcher=dispatcher, attempt=outcome.attempt, result=outcome.result
        )
    else:
        queue.fail(
            task_id=task_id,
            dispatcher=dispatcher,
            attempt=outcome.attempt,
            error=outcome.error,
            traceback=outcome.traceback or "",
            permanent=outcome.permanent,
            max_attempts=1,
        )
    return outcome


def test_the_default_backend_is_seedcore():
    assert isinstance(task_backends["default"], SeedCoreBackend)


def test_enqueue_writes_one_queued_row_with_the_path_the_arguments_and_the_options():
    run_after = datetime.now(UTC) + timedelta(hours=1)
    result = app.add.using(priority=7, queue_name="default", run_after=run_after).enqueue(2, b=3)
    row = selectors.get_task(result.id)
    assert row["type"] == "tests.taskapp.tasks.add"
    assert row["params"] == {"args": [2], "kwargs": {"b": 3}}
    assert (row["status"], row["priority"], row["run_after"]) == ("QUEUED", 7, run_after)
    assert row["domain"] is None
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs) == ([2], {"b": 3})
    assert result.enqueued_at == row["created_at"]
    assert result.started_at is None and result.finished_at is None
    assert result.attempts == 0 and result.errors == []


def test_a_queue_name_becomes_the_domain_organs_route_by(settings):
    settings.TASKS = {
        "default": {"BACKEND": "tasks.backends.SeedCoreBackend", "QUEUES": ["default", "gpu"]}
    }
    result = app.add.using(queue_name="gpu").enqueue(1, 1)
    assert selectors.get_task(result.id)["domain"] == "gpu"
    assert app.add.get_result(result.id).task.queue_name == "gpu"


def test_arguments_json_cannot_hold_are_refused_at_enqueue_and_no_row_is_written():
    with pytest.raises(TypeError):
        app.add.enqueue(object(), 1)
    with pytest.raises(ValueError, match="NaN"):
        app.add.enqueue(math.nan, 1)
    with pytest.raises(ValueError, match="NUL"):
        app.add.enqueue("a\x00b", 1)
    assert not Task.objects.exists()


def test_an_enqueue_in_a_rolled_back_transaction_leaves_no_row():
    with pytest.raises(RuntimeError), transaction.atomic():
        app.add.enqueue(1, 2)
        raise RuntimeError("roll back")
    assert not Task.objects.exists()


def test_an_enqueue_in_a_committed_transaction_is_there():
    with transaction.atomic():
        result = app.add.enqueue(1, 2)
    assert Task.objects.filter(id=result.id).exists()


def test_aenqueue_and_aget_result():
    async def both():
        result = await app.multiply.aenqueue(3, 4)
        return result, await app.multiply.aget_result(result.id)

    # async_to_sync: the ORM calls run on this thread, on the test's connection.
    enqueued, read = async_to_sync(both)()
    assert read.id == enqueued.id and read.status == TaskResultStatus.READY
    assert read.task.func is app.multiply.func


def test_get_result_of_a_missing_malformed_or_foreign_id_raises_does_not_exist():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("00000000-0000-0000-0000-000000000000")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-an-id")
    echo = queue.enqueue(type="echo")["id"]  # a SeedCore task, not a @task
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(echo)


def test_each_task_is_the_handler_of_its_import_path():
    spec = get_handler("tests.taskapp.tasks.add")
    assert spec is not None and not spec.is_async and not spec.control
    assert get_handler("tests.taskapp.tasks.multiply").is_async
    assert get_handler("tests.taskapp.tasks.not_a_task") is None


def test_a_sync_task_runs_on_an_agent_and_reads_back_successful():
    result = app.add.enqueue(2, 3)
    assert _run_on_agent(result.id).ok
    done = app.add.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert done.worker_ids == ["d1/agent-1"] and done.attempts == 1
    assert done.started_at == done.last_attempted_at is not None
    assert done.finished_at >= done.started_at >= done.enqueued_at
    assert done.errors == []


def test_an_async_task_and_a_task_that_takes_context_run_on_an_agent():
    product = app.multiply.enqueue(6, 7)
    _run_on_agent(product.id)
    assert app.multiply.get_result(product.id).return_value == 42
    context = app.whoami.enqueue(greeting="hi")
    _run_on_agent(context.id)
    value = app.whoami.get_result(context.id).return_value
    assert value == {"greeting": "hi", "attempt": 1, "result_id": context.id}


def test_a_raising_task_reads_back_failed_with_its_exception_and_traceback():
    result = app.boom.enqueue("it broke")
    outcome = _run_on_agent(result.id)
    assert outcome.status is OutcomeStatus.ERROR
    failed = app.boom.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    [error] = failed.errors
    assert error.exception_class is ValueError
    assert "it broke" in error.traceback and "Traceback" in error.traceback
    assert failed.worker_ids == ["d1"] and failed.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018


def test_a_row_naming_a_function_without_task_fails_and_is_never_imported():
    sys.modules.pop("tests.taskapp.not_a_task", None)
    for path in ("tests.taskapp.not_a_task.plain_function", "tests.taskapp.tasks.not_a_task"):
        task_id = queue.enqueue(type=path)["id"]
        outcome = _run_on_agent(task_id)
        assert outcome.status is OutcomeStatus.PERMANENT
        assert outcome.error == f"no handler registered for type '{path}'"
        assert selectors.get_task(task_id)["status"] == "FAILED"
    assert "tests.taskapp.not_a_task" not in sys.modules


def test_statuses_map_onto_django_s():
    result = app.add.enqueue(1, 1)
    queue.claim(dispatcher="d1", batch=1)
    assert app.add.get_result(result.id).status == TaskResultStatus.RUNNING
    queue.cancel(result.id)  # RUNNING: cancel requested; the attempt then ends CANCELLED
    queue.fail(task_id=result.id, dispatcher="d1", attempt=1, error="cancelled")
    cancelled = app.add.get_result(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[0].exception_class is AttemptFailed
    assert cancelled.errors[0].traceback == "cancelled"
    retry = app.add.enqueue(1, 1)
    queue.claim(dispatcher="d1", batch=1)
    queue.fail(task_id=retry.id, dispatcher="d1", attempt=1, error="x", max_attempts=3)
    assert app.add.get_result(retry.id).status == TaskResultStatus.READY


def test_the_api_and_the_dashboard_show_such_tasks_typed_by_their_path(make_user):
    from django.test import Client

    from tasks.auth import create_token

    path = "tests.taskapp.tasks.add"
    result = app.add.enqueue(2, 3)
    user = make_user("viewer", "viewer")
    api = Client(headers={"Authorization": f"Bearer {create_token(user, name='t')[1]}"})
    listed = api.get("/tasks", {"type": path}).json()["items"]
    assert [(task["id"], task["type"]) for task in listed] == [(result.id, path)]
    assert api.get(f"/tasks/{result.id}").json()["params"] == {"args": [2, 3], "kwargs": {}}

    viewer = Client()
    viewer.force_login(user)
    page = viewer.get("/dashboard/tasks/", {"type": path})
    assert page.status_code == 200 and path in page.content.decode()
    detail = viewer.get(f"/dashboard/tasks/{result.id}/")
    assert detail.status_code == 200 and path in detail.content.decode()


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"x": 1}, 'a @task\'s params must be {"args": [...], "kwargs": {...}}'),
        ({"args": {}}, 'a @task\'s params must be {"args": [...], "kwargs": {...}}'),
        ({"args": [1]}, "arguments do not fit tests.taskapp.tasks.add: missing a required"),
    ],
)
def test_a_row_whose_params_do_not_fit_the_function_fails_for_good(params, error):
    # As the API or psql could write it: the row names a @task, with other params.
    task_id = queue.enqueue(type="tests.taskapp.tasks.add", params=params)["id"]
    outcome = _run_on_agent(task_id)
    assert outcome.status is OutcomeStatus.PERMANENT
    assert outcome.error.startswith(f"PermanentError: {error}")


def test_enqueue_returns_the_task_it_was_given():
    run_after = datetime.now(UTC) + timedelta(minutes=5)
    deferred = app.add.using(priority=3, run_after=run_after)
    result = deferred.enqueue(1, 2)
    assert result.task == deferred and result.task.run_after == run_after
