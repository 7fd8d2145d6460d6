"""The Coordinator: the one entry point to the organism. Plain Python; actors.py wraps it.

It owns exactly one OrganismManager and never raises to its callers: whatever goes wrong
becomes an outcome dict (see ``organism.agent.outcome``), so a dispatcher always has something
to write.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

from organism.agent import outcome
from organism.manager import OrganismManager

logger = logging.getLogger("seedcore.coordinator")


class Coordinator:
    def __init__(self, manager: OrganismManager):
        self.manager = manager

    async def handle(self, task: dict[str, Any]) -> dict[str, Any]:
        async for result in self.handle_batch([task]):
            return result
        return _crashed(task, RuntimeError("no outcome"))  # pragma: no cover

    async def handle_batch(self, tasks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """One outcome per task, yielded as each task finishes."""
        async for chunk in self.handle_chunks(tasks):
            for result in chunk:
                yield result

    async def handle_chunks(
        self, tasks: list[dict[str, Any]]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Lists of outcomes, each yielded as soon as its tasks finish; every task's outcome
        appears exactly once. Many outcomes per message: the fast way across Ray."""
        answered: set[str] = set()
        try:
            async for chunk in self.manager.run_chunks(tasks):
                answered.update(result["id"] for result in chunk)
                yield chunk
        except Exception as exc:  # a bug here must not lose the batch: fail what is left
            logger.exception("coordinator: batch failed")
            left = [t for t in tasks if str(t.get("id", "")) not in answered]
            if left:
                yield [_crashed(task, exc) for task in left]

    async def cancel(self, task_id: str) -> bool:
        return await self.manager.cancel(str(task_id))

    def ping(self) -> str:
        return "pong"


def _crashed(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return outcome(
        task,
        ok=False,
        error=f"coordinator error: {type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )
