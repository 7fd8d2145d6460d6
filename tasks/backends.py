"""SeedCore as a backend of Django's Tasks framework (``django.tasks``).

On Django 6 the framework is ``django.tasks``; on Django 5.2 it is the ``django-tasks``
backport (``django_tasks``), which this module imports when Django has none::

    TASKS = {"default": {"BACKEND": "tasks.backends.SeedCoreBackend"}}

- **Enqueue** inserts one row through ``tasks.queue.enqueue_many``, on the caller's database
  connection and so in the caller's transaction: a task enqueued in a transaction that rolls
  back was never there. (Django's contract enqueues at once; wrap the call in
  ``transaction.on_commit`` to enqueue only after a commit.)
- **The row**: ``type`` is the function's import path, ``params`` is
  ``{"args": [...], "kwargs": {...}}``, ``priority`` the task's (−100…100, inside SeedCore's
  −1000…1000, so control tasks at the top still go first), ``run_after`` the task's, and
  ``domain`` the queue name (NULL for ``default``), which is what organs route by.
- **Running**: every ``@task`` bound to this backend registers itself as a handler of its import
  path when its module is imported (Django checks each task with its backend's
  :meth:`~SeedCoreBackend.validate_task` as it is decorated). Agents and the Coordinator import
  every installed app's ``tasks`` module at start (``organism.handlers.autodiscover``), so they
  know exactly those functions. A row naming any other path has no handler and ends FAILED at
  once: nothing is imported because of what a row says.
- **Results**: :meth:`~SeedCoreBackend.get_result` reads the row (:func:`result_from_row`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from django.db import DEFAULT_DB_ALIAS

try:  # Django 6.0+
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError
    from django.tasks.exceptions import InvalidTask as InvalidTaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2 and the django-tasks backport
    from django_tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued
    from django_tasks.utils import normalize_json

from tasks import queue, selectors
from tasks.ids import TaskIdError
from tasks.models import Status
from tasks.validation import MAX_TYPE_LENGTH, check_params

# A task's status in SeedCore → in Django's contract.
STATUS_MAP = {
    Status.QUEUED.value: TaskResultStatus.READY,
    Status.RETRY.value: TaskResultStatus.READY,
    Status.RUNNING.value: TaskResultStatus.RUNNING,
    Status.COMPLETED.value: TaskResultStatus.SUCCESSFUL,
    Status.FAILED.value: TaskResultStatus.FAILED,
    Status.CANCELLED.value: TaskResultStatus.FAILED,
}
_FINISHED = {Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value}

# @task functions bound to a SeedCoreBackend, by import path: what get_result can rebuild.
_tasks: dict[str, Task] = {}


class AttemptFailed(Exception):
    """The exception class of an attempt that SeedCore ended without the function raising
    (a timeout, a lost dispatcher, a cancel, no handler): its ``errors`` entry's class, with
    SeedCore's message as the traceback."""


class SeedCoreBackend(BaseTaskBackend):
    """Runs ``@task`` functions durably on the Ray cluster, as SeedCore tasks.

    OPTIONS: ``MAX_ATTEMPTS`` (attempts before FAILED; default SEEDCORE_MAX_ATTEMPTS) and
    ``DATABASE`` (the database alias of the tasks table; default ``default``).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        self.max_attempts = self.options.get("MAX_ATTEMPTS")
        self.using = self.options.get("DATABASE", DEFAULT_DB_ALIAS)

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if len(task.module_path) > MAX_TYPE_LENGTH:
            raise InvalidTaskError(
                f"a task's import path must be at most {MAX_TYPE_LENGTH} characters"
            )
        register(task)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        # TaskResult normalises the arguments as Django's own backends do, so what JSON
        # cannot hold is refused here, with Django's exception (TypeError, or ValueError for
        # bytes that are not UTF-8), before any row exists.
        result = _new_result(task, args, kwargs, backend=self.alias)
        params = {"args": result.args, "kwargs": result.kwargs}
        check_params(params)  # NaN, NUL, too large or too deep: ValueError
        [task_id] = queue.enqueue_many(
            [
                {
                    "type": task.module_path,
                    "params": params,
                    "domain": domain_of(task.queue_name),
                    "priority": task.priority,
                    "run_after": task.run_after,
                    "max_attempts": self.max_attempts,
                }
            ],
            using=self.using,
        )
        result = result_from_row(selectors.get_task(task_id, using=self.using), task)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        try:
            row = selectors.get_task(result_id, using=self.using)
        except (TaskIdError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        task = _tasks.get(row["type"])
        if task is None:
            from organism.handlers import autodiscover

            autodiscover()  # the installed apps' tasks modules; never the row's path
            task = _tasks.get(row["type"])
        if task is None or task.backend != self.alias:
            raise TaskResultDoesNotExist(f"{result_id} is not a task of backend {self.alias!r}")
        return result_from_row(row, task)


def domain_of(queue_name: str) -> str | None:
    """The ``domain`` a queue name is routed by: NULL for the default queue."""
    return None if queue_name == DEFAULT_TASK_QUEUE_NAME else queue_name


def _new_result(task: Task, args: Any, kwargs: Any, *, backend: str, **fields: Any) -> TaskResult:
    values = {
        "id": "",
        "status": TaskResultStatus.READY,
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "last_attempted_at": None,
        "errors": [],
        "worker_ids": [],
    }
    values.update(fields)
    return TaskResult(task=task, args=list(args), kwargs=dict(kwargs), backend=backend, **values)


# ---------------------------------------------------------------------------------------------
# A row as Django's TaskResult


def result_from_row(row: Mapping[str, Any], task: Task) -> TaskResult:
    """The TaskResult of a task row (as ``tasks.selectors.get_task`` reads it).

    ``errors``: one per failed attempt in the row's ``error_history``, with the exception's
    class and traceback. ``worker_ids``: one per attempt, the dispatcher that ran it, and for a
    successful attempt also the agent (``dispatcher/agent``). ``started_at`` and
    ``last_attempted_at`` are when the latest attempt was claimed (the row keeps no earlier
    start); ``finished_at`` is when a finished task last changed.
    """
    status = row["status"]
    history = row.get("error_history") or []
    worker_ids = [str(entry.get("dispatcher") or "") for entry in history]
    outcome = row.get("result") or {}
    if status in (Status.RUNNING.value, Status.COMPLETED.value) and row["attempts"]:
        agent = (outcome.get("routing") or {}).get("agent_id")
        worker = row.get("locked_by") or ""
        worker_ids.append(f"{worker}/{agent}" if agent else worker)
    params = row.get("params") or {}
    queue_name = row.get("domain") or DEFAULT_TASK_QUEUE_NAME
    if row["priority"] != task.priority or queue_name != task.queue_name:
        # A row edited out of the contract's range keeps the task's own.
        with contextlib.suppress(InvalidTaskError):
            task = dataclasses.replace(task, priority=row["priority"], queue_name=queue_name)
    started = row.get("locked_at") if row["attempts"] else None
    result = _new_result(
        task,
        params.get("args") or [],
        params.get("kwargs") or {},
        backend=task.backend,
        id=str(row["id"]),
        status=STATUS_MAP[status],
        enqueued_at=row["created_at"],
        started_at=started,
        last_attempted_at=started,
        finished_at=row.get("updated_at") if status in _FINISHED else None,
        errors=[task_error(entry) for entry in history],
        worker_ids=worker_ids,
    )
    if status == Status.COMPLETED.value:
        object.__setattr__(result, "_return_value", outcome.get("output"))
    return result


def task_error(entry: Mapping[str, Any]) -> TaskError:
    """One failed attempt of ``error_history`` as Django's TaskError."""
    traceback = entry.get("traceback") or ""
    path = exception_class_path(traceback)
    if path is None:
        return TaskError(
            exception_class_path=f"{__name__}.{AttemptFailed.__qualname__}",
            traceback=str(entry.get("error") or ""),
        )
    return TaskError(exception_class_path=path, traceback=traceback)


def exception_class_path(traceback: str) -> str | None:
    """The import path of the exception a formatted traceback ends with, or None.

    Python writes the exception's line right after the frames of the last ``Traceback``
    block, as ``module.Class: message`` (``Class: message`` for builtins).
    """
    lines = traceback.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback ")]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line and not line[0].isspace():
            name = line.split(":", 1)[0].strip()
            if not name or " " in name:
                return None
            return name if "." in name else f"builtins.{name}"
    return None


# ---------------------------------------------------------------------------------------------
# Running a @task on an agent


def register(task: Task) -> None:
    """Make ``task`` the handler of its import path (once per process and function)."""
    from organism.handlers import handler

    path = task.module_path
    known = _tasks.get(path)
    if known is not None and known.func is task.func:
        return
    handler(path)(_runner(task))
    _tasks[path] = task


def _runner(task: Task):
    """A handler ``(params, ctx)`` that calls ``task``'s function: async functions on the
    agent's loop, sync ones in its threads, as any handler."""
    if inspect.iscoroutinefunction(task.func):

        async def run_async_task(params: dict, ctx) -> Any:
            args, kwargs = _call_arguments(task, params, ctx)
            return normalize_json(await task.func(*args, **kwargs))

        return run_async_task

    def run_task(params: dict, ctx) -> Any:
        args, kwargs = _call_arguments(task, params, ctx)
        return normalize_json(task.func(*args, **kwargs))

    return run_task


def _call_arguments(task: Task, params: dict, ctx) -> tuple[list, dict]:
    """The call's arguments from the row's params; PermanentError (FAILED, not retried) when
    they are not ``{"args": [...], "kwargs": {...}}`` or do not fit the function."""
    from organism.handlers import PermanentError

    args, kwargs = params.get("args", []), params.get("kwargs", {})
    if set(params) - {"args", "kwargs"} or not (
        isinstance(args, list) and isinstance(kwargs, dict)
    ):
        raise PermanentError('a @task\'s params must be {"args": [...], "kwargs": {...}}')
    args = list(args)
    if task.takes_context:
        context = running_context(task, args, kwargs, task_id=ctx.task_id, attempt=ctx.attempt)
        args.insert(0, context)
    try:
        inspect.signature(task.func).bind(*args, **kwargs)
    except TypeError as exc:
        raise PermanentError(f"arguments do not fit {task.module_path}: {exc}") from None
    return args, kwargs


def running_context(
    task: Task, args: list, kwargs: dict, *, task_id: str, attempt: int
) -> TaskContext:
    """The context a ``takes_context`` task gets: its result, RUNNING, with its id and
    ``attempt`` (``context.attempt``); ``context.task_result.refresh()`` reads the row."""
    result = _new_result(
        task,
        args,
        kwargs,
        backend=task.backend,
        id=task_id,
        status=TaskResultStatus.RUNNING,
        worker_ids=[""] * (attempt - 1) + [f"attempt {attempt}"],
    )
    return TaskContext(task_result=result)
