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


# How the page colours each run's outcome (the status classes of the task statuses).
RUN_OUTCOME_CLASSES = {
    "completed": "status-completed",
    "error": "status-failed",
    "timeout": "status-failed",
    "cancelled": "status-cancelled",
    "system": "status-retry",
}


def runs_of(task: dict[str, Any], dashboard_url: str = "") -> list[dict[str, Any]]:
    """Each attempt an agent reported (``runs``), oldest first, as the page shows it: times
    as datetimes, the duration, the class of its outcome, a SYSTEM failure's kind (from the
    failed attempt's entry in ``error_history``) and, when ``dashboard_url`` (the setting
    RAY_DASHBOARD_URL) is set, links to its node's and actor's pages in the Ray dashboard."""
    kinds = {
        entry.get("attempt"): entry.get("system")
        for entry in task.get("error_history") or []
        if isinstance(entry, dict) and entry.get("system")
    }
    runs = []
    for run in task.get("runs") or []:
        if not isinstance(run, dict):
            continue
        started, finished = _when(run.get("started_at")), _when(run.get("finished_at"))
        node_id, actor_id = run.get("node_id"), run.get("actor_id")
        runs.append(
            {
                **run,
                "started_at": started,
                "finished_at": finished,
                "seconds": (finished - started).total_seconds() if started and finished else None,
                "outcome_class": RUN_OUTCOME_CLASSES.get(run.get("outcome"), "status-failed"),
                "kind": kinds.get(run.get("attempt")),
                "node_url": f"{dashboard_url}/#/cluster/nodes/{node_id}"
                if dashboard_url and node_id
                else None,
                "actor_url": f"{dashboard_url}/#/actors/{actor_id}"
                if dashboard_url and actor_id
                else None,
            }
        )
    return runs
