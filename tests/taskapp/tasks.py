"""Ordinary Django ``@task`` functions, bound to the default backend (SeedCore)."""

from __future__ import annotations

import asyncio

try:  # Django 6.0+
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def multiply(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a * b


@task(takes_context=True)
def whoami(context, greeting: str = "hello") -> dict:
    return {
        "greeting": greeting,
        "attempt": context.attempt,
        "result_id": context.task_result.id,
    }


@task
def boom(message: str) -> None:
    raise ValueError(message)


@task(priority=-50)
def low(label: str) -> str:
    return label


@task(priority=50)
def high(label: str) -> str:
    return label


def not_a_task() -> str:
    """A plain function next to the tasks: it has no @task, so it cannot be run as one."""
    return "should never run"
