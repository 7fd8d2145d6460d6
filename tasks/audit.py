"""The audit trail: who did what to the queue, when, and from where.

Operator actions (run now, cancel, bulk actions, organism control, tokens, admin edits) call
:func:`record` inside the transaction that makes the change, so an action is never done without
its entry, nor recorded without being done. The entry names the actor as people know them (a
username, the token a script used, the shell user of a CLI call) rather than pointing at rows
that may be deleted later. Entries are pruned after ``SEEDCORE_AUDIT_RETENTION_DAYS``.
"""

from __future__ import annotations

import base64
import binascii
import getpass
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from tasks import permissions
from tasks.ids import parse_id_prefix
from tasks.models import AuditEntry, AuditVia
from tasks.selectors import InvalidCursor, Page

# A text field an operator typed (a filter, a reason) is kept to this length in ``detail``.
MAX_DETAIL_TEXT = 1_000
MAX_PAGE = 200


@dataclass(frozen=True)
class Actor:
    """Who acts, as the trail names them."""

    name: str
    via: str
    address: str | None = None
    # What the actor may do (tasks.permissions): some actions depend on what they act on (re-running
    # an organism control task is organism control), so operations check it too.
    scope: str | None = None

    @classmethod
    def of_request(cls, request: HttpRequest, via: str) -> Actor:
        """The logged-in user (or the API token's owner, naming the token) behind ``request``,
        with the scope the request was granted (a token's, capped by its owner's)."""
        user = getattr(request, "auth", None) or getattr(request, "user", None)
        name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
        token = getattr(request, "api_token", None)
        if token is not None:
            name = f"{name} (token {token})"
        scope = getattr(request, "api_scope", None)
        if scope is None and token is None:
            scope = permissions.user_scope(user)
        return cls(name, via, request.META.get("REMOTE_ADDR") or None, scope)

    @classmethod
    def cli(cls) -> Actor:
        """A ``manage.py`` command: the shell user who ran it, who may do everything (a shell
        with the project's settings can reach the database anyway)."""
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for the uid (some containers)
            name = "unknown"
        return cls(name=name, via=AuditVia.CLI, scope=permissions.ADMIN)


def record(
    actor: Actor,
    action: str,
    *,
    target: str = "",
    task_ids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> None:
    """Write the entry for ``action`` (one per task when it names tasks, so each task's page
    lists it); call it inside the transaction of the change it records."""
    fields = {
        "actor": actor.name,
        "via": actor.via,
        "address": actor.address,
        "action": action,
        "target": target,
        "detail": _bounded(detail or {}),
    }
    ids = list(task_ids)
    entries = [AuditEntry(task_id=task_id, **fields) for task_id in ids] or [AuditEntry(**fields)]
    AuditEntry.objects.using(using).bulk_create(entries)


def _bounded(detail: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value[:MAX_DETAIL_TEXT] if isinstance(value, str) else value
        for key, value in detail.items()
    }


# ---------------------------------------------------------------------------------------------
# Reading the trail


@dataclass(frozen=True)
class AuditFilter:
    task: str | None = None  # a task UUID or prefix; entries outlive their tasks, so no lookup
    actor: str | None = None
    via: str | None = None
    action: str | None = None
    since: datetime | None = None
    before: datetime | None = None

    def q(self) -> Q:
        """The filter as a Q; raises tasks.ids.InvalidTaskId for a malformed task ID."""
        q = Q()
        if self.task:
            id_range = parse_id_prefix(self.task)
            q &= Q(task_id__gte=id_range.low, task_id__lte=id_range.high)
        for field in ("actor", "action"):
            value = getattr(self, field)
            if value:
                # No row holds NUL, and PostgreSQL refuses it in a parameter.
                q &= Q(pk__in=[]) if "\x00" in value else Q(**{f"{field}__icontains": value})
        if self.via:
            q &= Q(via=self.via)
        if self.since:
            q &= Q(at__gte=self.since)
        if self.before:
            q &= Q(at__lt=self.before)
        return q


def _encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{entry_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = raw.partition(":")
        if kind != "audit" or not number.isdigit() or len(number) > 19:
            raise ValueError(raw)
        return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(
            "cursor is malformed: pass back the next_cursor of a previous page"
        ) from None


def list_entries(
    audit_filter: AuditFilter | None = None, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """Entries newest first, keyset-paginated on the id like ``selectors.list_tasks``."""
    entries = AuditEntry.objects.filter((audit_filter or AuditFilter()).q())
    if cursor:
        entries = entries.filter(id__lt=_decode_cursor(cursor))
    limit = max(1, min(limit, MAX_PAGE))
    rows = list(
        entries.order_by("-id").values(
            "id", "at", "actor", "via", "address", "action", "target", "task_id", "detail"
        )[: limit + 1]
    )
    next_cursor = _encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    for row in rows:
        row["task_id"] = None if row["task_id"] is None else str(row["task_id"])
    return Page(items=rows[:limit], next_cursor=next_cursor)


def prune(
    older_than_days: float,
    *,
    batch_size: int = 1000,
    max_batches: int = 20,
    using: str = DEFAULT_DB_ALIAS,
) -> int:
    """Delete entries older than ``older_than_days``, at most ``max_batches`` short batches
    (the next round takes the rest); returns how many."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted = 0
    for _ in range(max_batches):
        ids = list(
            AuditEntry.objects.using(using)
            .filter(at__lt=cutoff)
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        deleted += AuditEntry.objects.using(using).filter(id__in=ids).delete()[0]
    return deleted
