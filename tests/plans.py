"""Reading PostgreSQL's EXPLAIN (FORMAT JSON) plans in tests."""

from __future__ import annotations

import json
from typing import Any


def root(explained: Any) -> dict:
    """The top plan node of what ``EXPLAIN (FORMAT JSON)`` returned (text or decoded)."""
    plan = json.loads(explained) if isinstance(explained, str) else explained
    return plan[0]["Plan"]


def tasks_nodes(plan: dict) -> list[dict]:
    """Every node of ``plan`` that reads or writes the tasks table."""
    found = [plan] if plan.get("Relation Name") == "tasks" else []
    for child in plan.get("Plans", []):
        found += tasks_nodes(child)
    return found
