"""The operator pages. Thin: they parse the request, call selectors, the queue engine or the
published Coordinator status, and render a page, or just its live partial when htmx asks for it."""

from __future__ import annotations

import json
from functools import partial
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import live, metrics
from dashboard.access import scope_required
from dashboard.timeline import attempts_of, routing_of, runs_of, timeline_of
from organism import control
from organism import status as published
from tasks import audit, bulk, operations, queue, schedules, selectors
from tasks.auth import ScopeTooNarrow
from tasks.ids import InvalidTaskId, TaskIdError
from tasks.models import STATUS_ORDER, AuditVia, Status, can_cancel, can_run_now
from tasks.permissions import ADMIN, OPERATE, READ
from tasks.validation import InvalidTask

PAGE_SIZE = 50
TASK_AUDIT_ENTRIES = 20  # the newest operator actions shown on a task's page


def _partial(request: HttpRequest, name: str) -> bool:
    """True when htmx asks for the live part ``name`` of a page rather than the whole page."""
    return bool(request.htmx) and request.GET.get("partial") == name


def _actor(request: HttpRequest) -> audit.Actor:
    return audit.Actor.of_request(request, AuditVia.DASHBOARD)


def _health_context() -> dict[str, Any]:
    return live.health_context()


def _queue_context(state: selectors.QueueState, back: str) -> dict[str, Any]:
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
    return {"paused": paused, "queue_back": back}


# ---------------------------------------------------------------------------------------------
# Overview


@scope_required(READ)
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
    context.update(_queue_context(selectors.queue_state(), "overview"))
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


FILTER_FIELDS = (
    "status",
    "type",
    "domain",
    "q",
    "params",
    "error",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
)


def _task_filter(request: HttpRequest) -> tuple[selectors.TaskFilter, dict[str, str], str | None]:
    """The filter of a request's query (or form), the raw values, and an error to show. A bad
    value is named in the error and left out of the filter."""
    source = request.POST if request.method == "POST" else request.GET
    raw = {key: source.get(key, "").strip() for key in FILTER_FIELDS}
    errors = []
    if raw["status"] and raw["status"] not in Status.values:
        errors.append(f"status must be one of {', '.join(Status.values)}")
        raw["status"] = ""
    values: dict[str, Any] = {
        "status": raw["status"] or None,
        "type": raw["type"] or None,
        "domain": raw["domain"] or None,
        "error": raw["error"] or None,
    }
    parsers = {"params": selectors.parse_params_filter} | {
        name: partial(selectors.parse_time_filter, name) for name in selectors.TIME_FIELDS
    }
    for name, parse in parsers.items():
        try:
            values[name] = parse(raw[name])
        except selectors.InvalidFilter as exc:
            errors.append(str(exc))
    if raw["q"]:
        try:
            selectors.TaskFilter(id_prefix=raw["q"]).q()
        except InvalidTaskId as exc:
            errors.append(str(exc))
        else:
            values["id_prefix"] = raw["q"]
    return selectors.TaskFilter(**values), raw, "; ".join(errors) or None


@scope_required(READ)
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
        "filter_active": not task_filter.is_empty(),
        "filter_query_failed": urlencode({**query, "status": Status.FAILED}),
        **_health_context(),
    }
    if _partial(request, "rows"):
        return render(request, "dashboard/partials/task_rows.html", context)
    context.update(_queue_context(state, "tasks"))
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


def _report(request: HttpRequest, outcome: operations.Outcome, verb: str) -> None:
    if outcome.done:
        messages.success(request, f"{verb} {len(outcome.done)} task(s).")
    for task_id, why in list(outcome.refused.items())[:10]:
        messages.error(request, f"{task_id[:8]}: {why}")
    if len(outcome.refused) > 10:
        messages.error(request, f"… and {len(outcome.refused) - 10} more refused.")


@scope_required(OPERATE)
@require_POST
def task_bulk(request: HttpRequest) -> HttpResponse:
    ids = request.POST.getlist("ids")
    action = request.POST.get("action")
    if not ids:
        messages.error(request, "Select at least one task first.")
    elif action == "retry":
        _report(request, operations.run_now_many(ids, _actor(request)), "Queued")
    elif action == "cancel":
        _report(request, operations.cancel_many(ids, _actor(request)), "Cancelled")
    else:
        messages.error(request, "action must be 'retry' or 'cancel'")
    return _back_to_list(request)


# "Cancel all matching" / "Retry all matching": confirm (the exact count), start, progress.

MATCHING_VERBS = {"cancel": "Cancel", "retry": "Retry"}


def _matching_action(request: HttpRequest) -> str | None:
    source = request.POST if request.method == "POST" else request.GET
    action = source.get("action", "")
    return action if action in MATCHING_VERBS else None


@scope_required(OPERATE)
@require_GET
def task_matching_confirm(request: HttpRequest) -> HttpResponse:
    task_filter, raw, error = _task_filter(request)
    action = _matching_action(request)
    if action is None:
        error = "action must be 'cancel' or 'retry'"
    elif task_filter.is_empty() and not error:
        error = "Set a filter first: an action on all matching needs one."
    if error:
        messages.error(request, error)
        return _back_to_list(request)
    total, snapshot_at = bulk.count(task_filter)
    context = {
        "action": action,
        "verb": MATCHING_VERBS[action],
        "total": total,
        "snapshot_at": snapshot_at.isoformat(),
        "filter": {key: value for key, value in raw.items() if value},
        "filter_query": urlencode({key: value for key, value in raw.items() if value}),
        **_health_context(),
    }
    return render(request, "dashboard/matching_confirm.html", context)


@scope_required(OPERATE)
@require_POST
def task_matching_start(request: HttpRequest) -> HttpResponse:
    task_filter, _, error = _task_filter(request)
    action = _matching_action(request)
    try:
        snapshot_at = selectors.parse_time_filter(
            "snapshot_at", request.POST.get("snapshot_at", "")
        )
    except selectors.InvalidFilter as exc:
        error = error or str(exc)
    if action is None or error or task_filter.is_empty() or snapshot_at is None:
        messages.error(request, error or "Confirm the action from its confirmation page.")
        return _back_to_list(request)
    try:
        started = operations.start_bulk(
            action, task_filter, _actor(request), snapshot_at=snapshot_at
        )
    except ScopeTooNarrow as exc:
        messages.error(request, str(exc))
        return _back_to_list(request)
    return redirect("dashboard:task_matching", bulk_id=started.pk)


@scope_required(READ)
@require_GET
def task_matching(request: HttpRequest, bulk_id: int) -> HttpResponse:
    try:
        progress = bulk.progress(bulk.get(bulk_id))
    except bulk.BulkActionNotFound as exc:
        raise Http404(str(exc)) from None
    context = {
        "bulk": progress,
        "verb": MATCHING_VERBS[progress["action"]],
        "filter_query": urlencode(_raw_filter_of(progress["filter"])),
        **_health_context(),
    }
    if _partial(request, "progress"):
        return render(request, "dashboard/partials/matching_progress.html", context)
    return render(request, "dashboard/matching.html", context)


@scope_required(OPERATE)
@require_POST
def task_matching_continue(request: HttpRequest, bulk_id: int) -> HttpResponse:
    try:
        operations.resume_bulk(bulk_id, _actor(request))
    except bulk.BulkActionNotFound as exc:
        raise Http404(str(exc)) from None
    except bulk.NotInterrupted as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:task_matching", bulk_id=bulk_id)


def _raw_filter_of(stored: dict[str, Any]) -> dict[str, str]:
    """A stored filter (TaskFilter.describe) as the tasks page's query."""
    raw = {("q" if key == "id_prefix" else key): value for key, value in stored.items()}
    if "params" in raw:
        raw["params"] = json.dumps(raw["params"])
    return {key: str(value) for key, value in raw.items()}


# ---------------------------------------------------------------------------------------------
# One task


def _get_task(task_id: str) -> dict[str, Any]:
    try:
        return selectors.get_task(selectors.resolve_id(task_id))
    except TaskIdError as exc:
        raise Http404(str(exc)) from None


@scope_required(READ)
@require_GET
def task_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    task = _get_task(task_id)
    if task["id"] != task_id:
        return redirect("dashboard:task", task_id=task["id"])
    context = {
        "task": task,
        "timeline": timeline_of(task),
        "attempts": attempts_of(task),
        "runs": runs_of(task, settings.RAY_DASHBOARD_URL),
        "routing": routing_of(task),
        "params_json": json.dumps(task["params"], indent=2, sort_keys=True),
        "result_json": None
        if task["result"] is None
        else json.dumps(task["result"], indent=2, sort_keys=True),
        "can_run": can_run_now(task["status"]),
        "can_cancel": can_cancel(task["status"], cancel_requested=task["cancel_requested"]),
        "audit_entries": audit.list_entries(
            audit.AuditFilter(task=task["id"]), limit=TASK_AUDIT_ENTRIES
        ).items,
        "waiting": selectors.waiting_reason(task),
        **_health_context(),
    }
    if _partial(request, "task"):
        return render(request, "dashboard/partials/task_body.html", context)
    return render(request, "dashboard/task.html", context)


@scope_required(OPERATE)
@require_POST
def task_action(request: HttpRequest, task_id: str) -> HttpResponse:
    task = _get_task(task_id)
    action = request.POST.get("action")
    try:
        if action == "run":
            operations.run_now(task["id"], _actor(request))
            messages.success(request, f"Task {task['id'][:8]} queued to run now.")
        elif action == "cancel":
            operations.cancel(task["id"], _actor(request))
            messages.success(request, f"Cancel of task {task['id'][:8]} requested.")
        else:
            messages.error(request, "action must be 'run' or 'cancel'")
    except (queue.TransitionNotAllowed, ScopeTooNarrow) as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:task", task_id=task["id"])


# ---------------------------------------------------------------------------------------------
# The queue's controls: pause, resume, limits (tasks.queue)

QUEUE_BACK = {"overview": "dashboard:overview", "tasks": "dashboard:tasks"}


@scope_required(OPERATE)
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
            operations.pause_queue(task_type, _actor(request))
            messages.success(request, f"Paused {what}; running tasks finish.")
        elif action == "resume":
            operations.resume_queue(task_type, _actor(request))
            messages.success(request, f"Resumed {what}.")
        elif action == "limit" and not everything:
            limit = _limit_field(request.POST.get("limit", ""))
            operations.set_concurrency_limit(task_type, limit, _actor(request))
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


@scope_required(READ)
@require_GET
def organism(request: HttpRequest) -> HttpResponse:
    snapshot = published.coordinator_view(published.read())
    return render(
        request,
        "dashboard/organism.html",
        {"coordinator": snapshot, "health": {"coordinator": snapshot}},
    )


@scope_required(ADMIN)
@require_POST
def organism_action(request: HttpRequest) -> HttpResponse:
    action = request.POST.get("action")
    calls = {"initialize": "initialize_organism", "shutdown": "shutdown_organism"}
    if action not in calls:
        messages.error(request, "action must be 'initialize' or 'shutdown'")
        return redirect("dashboard:organism")
    try:
        control.run_control(calls[action], actor=_actor(request))
    except (control.ControlUnavailable, control.ControlTimeout, control.ControlFailed) as exc:
        messages.error(request, f"{action} failed: {exc}")
    else:
        messages.success(request, f"Organism {action} done.")
    return redirect("dashboard:organism")


# ---------------------------------------------------------------------------------------------
# Schedules: listed with their runs; Run now, Pause and Resume go through tasks.schedules.

SCHEDULE_ACTIONS = {
    "run": operations.run_schedule_now,
    "pause": operations.pause_schedule,
    "resume": operations.resume_schedule,
}


@scope_required(READ)
@require_GET
def schedule_list(request: HttpRequest) -> HttpResponse:
    context = {
        "schedules": selectors.list_schedules(),
        **_health_context(),
    }
    if _partial(request, "rows"):
        return render(request, "dashboard/partials/schedule_rows.html", context)
    return render(request, "dashboard/schedules.html", context)


@scope_required(READ)
@require_GET
def schedule_detail(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = selectors.get_schedule(schedule_id)
    if schedule is None:
        raise Http404(f"no schedule with ID {schedule_id}")
    context = {
        "schedule": schedule,
        "params_json": json.dumps(schedule["params"], indent=2, sort_keys=True),
        "runs": selectors.schedule_runs(schedule_id),
        "runs_shown": selectors.SCHEDULE_RUNS_SHOWN,
        **_health_context(),
    }
    if _partial(request, "runs"):
        return render(request, "dashboard/partials/schedule_body.html", context)
    return render(request, "dashboard/schedule.html", context)


def _report_schedule(request: HttpRequest, result: str | Any) -> None:
    if isinstance(result, str):  # Run now: the task's id
        messages.success(request, f"Queued task {result[:8]} now.")
    else:
        messages.success(request, f"{'Resumed' if result.enabled else 'Paused'} {result.name}.")


@scope_required(OPERATE)
@require_POST
def schedule_action(request: HttpRequest, schedule_id: int) -> HttpResponse:
    action = SCHEDULE_ACTIONS.get(request.POST.get("action", ""))
    if action is None:
        messages.error(request, "action must be 'run', 'pause' or 'resume'")
    else:
        try:
            result = action(schedule_id, _actor(request))
        except schedules.ScheduleNotFound as exc:
            raise Http404(str(exc)) from None
        except ScopeTooNarrow as exc:
            messages.error(request, str(exc))
        else:
            _report_schedule(request, result)
    if request.POST.get("back") == "list":
        return redirect("dashboard:schedules")
    return redirect("dashboard:schedule", schedule_id=schedule_id)
