"""The operator pages. Thin: they parse the request, call selectors, the queue engine or the
published Coordinator status, and render a page, or just its live partial when htmx asks for it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import actions, live, metrics
from dashboard.timeline import attempts_of, routing_of, timeline_of
from organism import control
from organism import status as published
from tasks import permissions, queue, selectors
from tasks.ids import InvalidTaskId, TaskIdError
from tasks.models import STATUS_ORDER, Status, can_cancel, can_run_now
from tasks.validation import InvalidTask

PAGE_SIZE = 50


def _partial(request: HttpRequest, name: str) -> bool:
    """True when htmx asks for the live part ``name`` of a page rather than the whole page."""
    return bool(request.htmx) and request.GET.get("partial") == name


def _health_context() -> dict[str, Any]:
    monitor = live.current_monitor()
    snapshot = monitor.latest if monitor else None
    return {"health": snapshot}


def _can_operate(request: HttpRequest) -> bool:
    """Whether the operator's buttons (pause, resume, limits) are shown to this user."""
    return permissions.allows(permissions.user_scope(request.user), permissions.OPERATE)


def _queue_context(request: HttpRequest, state: selectors.QueueState, back: str) -> dict[str, Any]:
    """The paused banner: what is paused and since when, and where its Resume returns."""
    paused = (
        [{"type": "", "label": "all types", "since": state.all_paused_at}]
        if (state.all_paused)
        else []
    )
    paused += [
        {"type": t, "label": f"type {t}", "since": since}
        for t, since in sorted(state.paused.items())
    ]
    return {"paused": paused, "queue_back": back, "can_operate": _can_operate(request)}


# ---------------------------------------------------------------------------------------------
# Overview


@staff_member_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    context = {
        "counts": _counts(),
        "stats": metrics.last_hour(),
        "chart": {"width": metrics.CHART_WIDTH, "height": metrics.CHART_HEIGHT},
        **_health_context(),
    }
    if _partial(request, "stats"):
        return render(request, "dashboard/partials/overview_stats.html", context)
    context["dispatchers"] = live.dispatcher_rows()
    context["queue"] = selectors.queue_overview()
    context.update(_queue_context(request, selectors.queue_state(), "overview"))
    return render(request, "dashboard/overview.html", context)


# Exact counts up to this many per status, estimates above: the overview refreshes live, so
# its counts must stay cheap (about 15 ms at a million rows, against 160 ms at the default).
COUNT_CAP = 10_000


def _counts() -> list[dict[str, Any]]:
    counts = selectors.count_by_status(cap=COUNT_CAP)
    return [
        {"status": status, "count": counts[status].count, "exact": counts[status].exact}
        for status in STATUS_ORDER
        if status in counts
    ]


# ---------------------------------------------------------------------------------------------
# Tasks


def _task_filter(request: HttpRequest) -> tuple[selectors.TaskFilter, dict[str, str], str | None]:
    """The filter of a request's query (or form), the raw values, and an error to show."""
    source = request.POST if request.method == "POST" else request.GET
    raw = {key: source.get(key, "").strip() for key in ("status", "type", "domain", "q")}
    error = None
    if raw["status"] and raw["status"] not in Status.values:
        error = f"status must be one of {', '.join(Status.values)}"
        raw["status"] = ""
    task_filter = selectors.TaskFilter(
        status=raw["status"] or None,
        type=raw["type"] or None,
        domain=raw["domain"] or None,
        id_prefix=raw["q"] or None,
    )
    if task_filter.id_prefix:
        try:
            task_filter.q()
        except InvalidTaskId as exc:
            error = str(exc)
            task_filter = selectors.TaskFilter(
                status=task_filter.status, type=task_filter.type, domain=task_filter.domain
            )
    return task_filter, raw, error


@staff_member_required
@require_GET
def task_list(request: HttpRequest) -> HttpResponse:
    task_filter, raw, error = _task_filter(request)
    cursor = request.GET.get("cursor") or None
    try:
        page = selectors.list_tasks(task_filter, cursor=cursor, limit=PAGE_SIZE)
    except selectors.InvalidCursor as exc:
        error, cursor = str(exc), None
        page = selectors.list_tasks(task_filter, limit=PAGE_SIZE)
    query = {key: value for key, value in raw.items() if value}
    state = selectors.queue_state()
    context = {
        "page": page,
        "rows": [_row_labels(row, state) for row in page.items],
        "filter": raw,
        "filter_error": error,
        "statuses": STATUS_ORDER,
        "cursor": cursor or "",
        "filter_query": urlencode(query),
        "next_query": urlencode({**query, "cursor": page.next_cursor}) if page.next_cursor else "",
        "live_query": urlencode({**query, **({"cursor": cursor} if cursor else {})}),
        **_health_context(),
    }
    if _partial(request, "rows"):
        return render(request, "dashboard/partials/task_rows.html", context)
    context.update(_queue_context(request, state, "tasks"))
    return render(request, "dashboard/tasks.html", context)


def _row_labels(row: dict[str, Any], state: selectors.QueueState) -> dict[str, Any]:
    """A listing row with its labels formatted once here: Django's ``date`` filter, run three
    times per row, was most of a 50-row page's render time."""
    created, updated = row["created_at"], row["updated_at"]
    return {
        **row,
        "short_id": row["id"][:8],
        "created_iso": created.isoformat(),
        "created_label": created.strftime("%b %d %H:%M:%S"),
        "updated_iso": updated.isoformat(),
        "updated_label": updated.strftime("%H:%M:%S"),
        "waiting": selectors.waiting_reason(row, state),
    }


def _back_to_list(request: HttpRequest) -> HttpResponse:
    _, raw, _ = _task_filter(request)
    query = urlencode({key: value for key, value in raw.items() if value})
    return redirect(reverse("dashboard:tasks") + (f"?{query}" if query else ""))


def _report(request: HttpRequest, outcome: actions.Outcome, verb: str) -> None:
    if outcome.done:
        messages.success(request, f"{verb} {len(outcome.done)} task(s).")
    for task_id, why in list(outcome.refused.items())[:10]:
        messages.error(request, f"{task_id[:8]}: {why}")
    if len(outcome.refused) > 10:
        messages.error(request, f"… and {len(outcome.refused) - 10} more refused.")


@staff_member_required
@require_POST
def task_bulk(request: HttpRequest) -> HttpResponse:
    ids = request.POST.getlist("ids")
    action = request.POST.get("action")
    if not ids:
        messages.error(request, "Select at least one task first.")
    elif action == "retry":
        _report(request, actions.run_now_many(ids), "Queued")
    elif action == "cancel":
        _report(request, actions.cancel_many(ids), "Cancelled")
    else:
        messages.error(request, "action must be 'retry' or 'cancel'")
    return _back_to_list(request)


@staff_member_required
@require_POST
def task_retry_failed(request: HttpRequest) -> HttpResponse:
    task_filter, _, error = _task_filter(request)
    if error:
        messages.error(request, error)
        return _back_to_list(request)
    queued, truncated = actions.retry_failed_matching(task_filter)
    note = (
        f" (stopped at {actions.RETRY_ALL_LIMIT}; run it again for the rest)" if truncated else ""
    )
    messages.success(request, f"Queued {queued} FAILED task(s) again{note}.")
    return _back_to_list(request)


# ---------------------------------------------------------------------------------------------
# One task


def _get_task(task_id: str) -> dict[str, Any]:
    try:
        return selectors.get_task(selectors.resolve_id(task_id))
    except TaskIdError as exc:
        raise Http404(str(exc)) from None


@staff_member_required
@require_GET
def task_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    task = _get_task(task_id)
    if task["id"] != task_id:
        return redirect("dashboard:task", task_id=task["id"])
    context = {
        "task": task,
        "timeline": timeline_of(task),
        "attempts": attempts_of(task),
        "routing": routing_of(task),
        "params_json": json.dumps(task["params"], indent=2, sort_keys=True),
        "result_json": None
        if task["result"] is None
        else json.dumps(task["result"], indent=2, sort_keys=True),
        "can_run": can_run_now(task["status"]),
        "can_cancel": can_cancel(task["status"], cancel_requested=task["cancel_requested"]),
        "waiting": selectors.waiting_reason(task),
        **_health_context(),
    }
    if _partial(request, "task"):
        return render(request, "dashboard/partials/task_body.html", context)
    return render(request, "dashboard/task.html", context)


@staff_member_required
@require_POST
def task_action(request: HttpRequest, task_id: str) -> HttpResponse:
    task = _get_task(task_id)
    action = request.POST.get("action")
    try:
        if action == "run":
            queue.run_now(task["id"])
            messages.success(request, f"Task {task['id'][:8]} queued to run now.")
        elif action == "cancel":
            queue.cancel(task["id"])
            messages.success(request, f"Cancel of task {task['id'][:8]} requested.")
        else:
            messages.error(request, "action must be 'run' or 'cancel'")
    except queue.TransitionNotAllowed as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:task", task_id=task["id"])


# ---------------------------------------------------------------------------------------------
# The queue's controls: pause, resume, limits (tasks.queue)

QUEUE_BACK = {"overview": "dashboard:overview", "tasks": "dashboard:tasks"}


@staff_member_required
@require_POST
def queue_action(request: HttpRequest) -> HttpResponse:
    """Pause or resume a type (``type``) or everything (``all=1``), or set a type's limit
    (``limit``: a whole number, blank to clear the override)."""
    action = request.POST.get("action")
    everything = request.POST.get("all") == "1"
    task_type = None if everything else request.POST.get("type", "")
    what = "all types" if everything else f"type {task_type.strip()}"
    try:
        if action == "pause":
            queue.pause(task_type)
            messages.success(request, f"Paused {what}; running tasks finish.")
        elif action == "resume":
            queue.resume(task_type)
            messages.success(request, f"Resumed {what}.")
        elif action == "limit" and not everything:
            limit = _limit_field(request.POST.get("limit", ""))
            queue.set_concurrency_limit(task_type, limit)
            messages.success(request, f"Limit of {what}: {limit or 'as declared in code'}.")
        else:
            messages.error(request, "action must be 'pause', 'resume' or 'limit' (of one type)")
    except InvalidTask as exc:
        messages.error(request, str(exc))
    return redirect(QUEUE_BACK.get(request.POST.get("back", ""), "dashboard:overview"))


def _limit_field(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidTask({"limit": "must be a whole number, or blank to clear the override"})
    return int(text)


# ---------------------------------------------------------------------------------------------
# Organism: as rundispatcher published it; control goes through the queue (organism.control).


@staff_member_required
@require_GET
def organism(request: HttpRequest) -> HttpResponse:
    snapshot = published.coordinator_view(published.read())
    return render(
        request,
        "dashboard/organism.html",
        {"coordinator": snapshot, "health": {"coordinator": snapshot}},
    )


@staff_member_required
@require_POST
def organism_action(request: HttpRequest) -> HttpResponse:
    action = request.POST.get("action")
    calls = {"initialize": "initialize_organism", "shutdown": "shutdown_organism"}
    if action not in calls:
        messages.error(request, "action must be 'initialize' or 'shutdown'")
        return redirect("dashboard:organism")
    try:
        control.run_control(calls[action])
    except (control.ControlUnavailable, control.ControlTimeout, control.ControlFailed) as exc:
        messages.error(request, f"{action} failed: {exc}")
    else:
        messages.success(request, f"Organism {action} done.")
    return redirect("dashboard:organism")
