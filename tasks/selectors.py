"""Reads of the tasks table for the API, the dashboard and the CLI.

Listings are newest first with keyset pagination over (created_at, id): the cost of a page
does not grow with its depth, and nothing counts the whole table.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils.dateparse import parse_datetime

from tasks.ids import parse_id_prefix
from tasks.models import Dispatcher, Task

MAX_PAGE = 500
LIST_FIELDS = (
    "id",
    "status",
    "type",
    "domain",
    "description",
    "attempts",
    "priority",
    "drift_score",
    "run_after",
    "locked_by",
    "created_at",
    "updated_at",
    "error",
)


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class TaskFilter:
    status: str | None = None
    type: str | None = None
    domain: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    id_prefix: str | None = None

    def q(self) -> Q:
        """The filter as a Q; raises tasks.ids.InvalidTaskId for a malformed ID prefix."""
        q = Q()
        if self.status:
            q &= Q(status=self.status)
        for column in ("type", "domain"):
            value = getattr(self, column)
            if value:
                # PostgreSQL refuses NUL in a text parameter (a 500 for the dashboard and the
                # CLI) and no row can hold it, so such a filter matches nothing.
                q &= Q(pk__in=[]) if "\x00" in value else Q(**{column: value})
        if self.created_after:
            q &= Q(created_at__gte=self.created_after)
        if self.created_before:
            q &= Q(created_at__lt=self.created_before)
        if self.id_prefix:
            id_range = parse_id_prefix(self.id_prefix)
            q &= Q(id__gte=id_range.low, id__lte=id_range.high)
        return q


def encode_cursor(created_at: datetime, task_id: Any) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor from :func:`encode_cursor` holds; InvalidCursor for any
    other string. A cursor is opaque but travels through clients, so a forged one (an ID that
    is no UUID, a time without an offset or out of range in UTC) is refused here rather than
    left for the database to choke on."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, task_id = raw.split("|", 1)
        created_at = parse_datetime(created)
        task_id = str(uuid.UUID(task_id))
        if created_at is not None:
            created_at = created_at.astimezone(UTC) if created_at.tzinfo else None
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        created_at = None
    if created_at is None:
        raise InvalidCursor("cursor is malformed: pass back the next_cursor of a previous page")
    return created_at, task_id


def list_tasks(
    task_filter: TaskFilter | None = None, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """One page of tasks, newest first, as dicts of LIST_FIELDS."""
    limit = max(1, min(limit, MAX_PAGE))
    queryset = Task.objects.filter((task_filter or TaskFilter()).q())
    if cursor:
        created_at, task_id = decode_cursor(cursor)
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=task_id)
        )
    rows = list(queryset.order_by("-created_at", "-id").values(*LIST_FIELDS)[: limit + 1])
    for row in rows:
        row["id"] = str(row["id"])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return Page(items=rows, next_cursor=next_cursor)


def list_dispatchers() -> list[dict[str, Any]]:
    """Every dispatcher heartbeat row, by name, with its circuit breaker's state."""
    rows = list(
        Dispatcher.objects.values(
            "name", "node", "pid", "started_at", "last_beat_at", "in_flight", "processed"
        ).annotate(circuit=KT("stats__circuit"))
    )
    for row in rows:
        row["circuit"] = row["circuit"] or "closed"  # rows written before the breaker existed
    return rows
