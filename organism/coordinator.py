"""The Coordinator: the one entry point to the organism. Plain Python; organism.ray wraps it.

It owns exactly one OrganismManager and never raises to the dispatchers: whatever goes wrong
becomes an :class:`~organism.messages.Outcome`, so a dispatcher always has something to write.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

from organism.manager import OrganismManager
from organism.messages import Outcome, OutcomeStatus, TaskPayload

logger = logging.getLogger("seedcore.coordinator")


class Coordinator:
    def __init__(self, manager: OrganismManager):
        self.manager = manager

    async def run(self, task: TaskPayload) -> Outcome:
        async for chunk in self.run_chunks([task]):
            return chunk[0]
        raise AssertionError("run_chunks yielded nothing")  # pragma: no cover

    async def run_chunks(self, tasks: list[TaskPayload]) -> AsyncIterator[list[Outcome]]:
        """Lists of outcomes, each yielded as soon as its tasks finish; every task's outcome
        appears exactly once. Many outcomes per message: the fast way across Ray."""
        answered: set[str] = set()
        try:
            async for chunk in self.manager.run_chunks(tasks):
                answered.update(outcome.task_id for outcome in chunk)
                yield chunk
        except Exception as exc:  # a bug here must not lose the batch: fail what is left
            logger.exception("coordinator: batch failed")
            left = [task for task in tasks if task.id not in answered]
            if left:
                yield [_crashed(task, exc) for task in left]

    async def cancel(self, task_id: str) -> bool:
        return await self.manager.cancel(task_id)

    async def initialize(self) -> None:
        """Bring the organism up now rather than on the first task."""
        await self.manager.initialize()

    async def summary(self) -> dict[str, Any]:
        """Organs, agents and load (``get_organism_summary``'s output)."""
        return await self.manager.summary()

    async def tick(self, backlog: dict[str, int]) -> dict[str, Any]:
        """Scale the organs to the backlog per task type; the summary, with ``holds``."""
        return await self.manager.tick(backlog)

    async def shutdown(self) -> dict[str, Any]:
        """Stop every organ and agent (``shutdown_organism``'s output)."""
        return await self.manager.shutdown()

    def ping(self) -> str:
        return "pong"


def _crashed(task: TaskPayload, exc: BaseException) -> Outcome:
    return Outcome.failure(
        task,
        OutcomeStatus.CRASHED,
        f"coordinator error: {type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )
