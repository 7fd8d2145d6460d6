"""Reading the ``record`` handler's log against the queue: the figures the fault suite
asserts and prints."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Audit:
    tasks: int = 0
    completed: int = 0
    executions: int = 0
    re_executed: int = 0  # ran more than once: an attempt lost to a fault, then retried
    retried: int = 0  # needed more than one attempt (an attempt cut short leaves no record)
    lost: list[str] = field(default_factory=list)  # not COMPLETED, or result never recorded
    completed_twice: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        return self.lost + self.completed_twice


def read_log(path: Path) -> dict[str, list[tuple[int, str]]]:
    """task id -> [(attempt, execution id)] in the order they ran."""
    runs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            task_id, attempt, execution = line.split()
            runs[task_id].append((int(attempt), execution))
    return runs


def audit(tasks: list[dict[str, Any]], log: Path) -> Audit:
    """Check each task: COMPLETED, its stored result names an execution the log recorded
    exactly once, and no two executions recorded the same attempt (two completions)."""
    runs = read_log(log)
    result = Audit(tasks=len(tasks))
    for task in tasks:
        task_id = str(task["id"])
        result.by_status[task["status"]] = result.by_status.get(task["status"], 0) + 1
        executions = runs.get(task_id, [])
        result.executions += len(executions)
        result.re_executed += len(executions) > 1
        result.retried += (task.get("attempts") or 0) > 1
        attempts = [attempt for attempt, _ in executions]
        if len(set(attempts)) != len(attempts):
            result.completed_twice.append(task_id)
        if task["status"] != "COMPLETED":
            result.lost.append(task_id)
            continue
        result.completed += 1
        output = (task.get("result") or {}).get("output") or {}
        recorded = [e for _, e in executions if e == output.get("execution")]
        if len(recorded) != 1:
            result.lost.append(task_id)
    return result
