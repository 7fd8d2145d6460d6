"""A task's history as the task page shows it, built from its row alone (pure functions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return parse_datetime(value)
    return None


def attempts_of(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Each failed attempt of ``error_history``, oldest first, with ``at`` as a datetime."""
    entries = []
    for entry in task.get("error_history") or []:
        if isinstance(entry, dict):
            entries.append({**entry, "at": _when(entry.get("at"))})
    return entries


def timeline_of(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Events newest last: enqueued, each failed attempt's outcome, the latest claim, and the
    current status as of ``updated_at``."""
    events = [{"at": task["created_at"], "status": "QUEUED", "label": "enqueued"}]
    for entry in attempts_of(task):
        events.append(
            {
                "at": entry["at"],
                "status": entry.get("outcome") or "RETRY",
                "label": f"attempt {entry.get('attempt', '?')} failed",
            }
        )
    if task.get("locked_at"):
        events.append(
            {
                "at": task["locked_at"],
                "status": "RUNNING",
                "label": f"attempt {task['attempts']} started on {task.get('locked_by') or '?'}",
            }
        )
    events = sorted((event for event in events if event["at"] is not None), key=_at)
    if task["status"] not in ("QUEUED", "RUNNING") or not task.get("locked_at"):
        events.append({"at": task["updated_at"], "status": task["status"], "label": "now"})
    return events


def _at(event: dict[str, Any]) -> datetime:
    return event["at"]


def routing_of(task: dict[str, Any]) -> dict[str, Any] | None:
    """The routing the Coordinator recorded in ``result["routing"]``: path, organ, agent."""
    result = task.get("result")
    if not isinstance(result, dict):
        return None
    routing = result.get("routing")
    if not isinstance(routing, dict) or not routing:
        return None
    return {
        "path": routing.get("path"),
        "organ": routing.get("organ_id") or routing.get("organ"),
        "agent": routing.get("agent_id") or routing.get("agent"),
        "other": {k: v for k, v in routing.items() if k not in ROUTING_KEYS},
    }


ROUTING_KEYS = {"path", "organ_id", "organ", "agent_id", "agent"}
