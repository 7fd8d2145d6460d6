"""The audit trail page: every operator action, newest first, filterable. Thin over
``tasks.audit``."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard import live
from dashboard.access import scope_required
from tasks import audit, selectors
from tasks.ids import InvalidTaskId
from tasks.models import AuditVia
from tasks.permissions import READ

PAGE_SIZE = 50
FILTER_FIELDS = ("actor", "via", "action", "task")


@scope_required(READ)
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    raw = {key: request.GET.get(key, "").strip() for key in FILTER_FIELDS}
    error = None
    if raw["via"] and raw["via"] not in AuditVia.values:
        error = f"via must be one of {', '.join(AuditVia.values)}"
        raw["via"] = ""
    audit_filter = audit.AuditFilter(**{key: value or None for key, value in raw.items()})
    cursor = request.GET.get("cursor") or None
    try:
        page = audit.list_entries(audit_filter, cursor=cursor, limit=PAGE_SIZE)
    except (InvalidTaskId, selectors.InvalidCursor) as exc:
        error, cursor = str(exc), None
        if isinstance(exc, InvalidTaskId):
            raw["task"] = ""
        audit_filter = audit.AuditFilter(**{key: value or None for key, value in raw.items()})
        page = audit.list_entries(audit_filter, limit=PAGE_SIZE)
    query = {key: value for key, value in raw.items() if value}
    return render(
        request,
        "dashboard/audit.html",
        {
            "page": page,
            "filter": raw,
            "filter_error": error,
            "vias": AuditVia.choices,
            "cursor": cursor or "",
            "filter_query": urlencode(query),
            "next_query": urlencode({**query, "cursor": page.next_cursor})
            if page.next_cursor
            else "",
            **live.health_context(),
        },
    )
