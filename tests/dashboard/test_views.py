"""The dashboard pages and the Task admin, through Django's test client and the real engine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard import views
from tasks import bulk, heartbeats, queue, selectors
from tasks.models import BulkAction, Task
from tasks.validation import (
    MAX_DOMAIN_LENGTH,
    MAX_PARAMS_BYTES,
    MAX_PARAMS_DEPTH,
    MAX_TYPE_LENGTH,
)
from tests.dashboard.conftest import completed_task, failed_task

pytestmark = pytest.mark.django_db

PAGES = ["dashboard:overview", "dashboard:tasks", "dashboard:organism"]
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def coordinator_down():
    """rundispatcher reported the Coordinator out of reach (organism.status; no Ray here)."""
    from django.conf import settings

    from organism import status

    error = "the Coordinator is not running; start it"
    status.publish(namespace=settings.RAY_NAMESPACE, ping_ms=None, error=error, summary=None)


@pytest.mark.parametrize("name", PAGES)
def test_pages_need_a_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:login"))


@pytest.mark.parametrize("is_staff", [False, True])
def test_pages_need_a_permission_not_staff_status(client, make_user, is_staff):
    client.force_login(make_user("someone", None, is_staff=is_staff))
    refused = client.get(reverse("dashboard:tasks"))
    assert refused.status_code == 403 and "viewer" in refused.content.decode()
    task = queue.enqueue(type="echo")
    assert (
        client.post(
            reverse("dashboard:task_action", args=[task["id"]]), {"action": "cancel"}
        ).status_code
        == 403
    )
    assert selectors.get_task(task["id"])["status"] == "QUEUED"


def test_root_redirects_to_the_dashboard(organism_admin_client):
    response = organism_admin_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:overview")


def test_overview_shows_counts_and_last_hour(organism_admin_client, coordinator_down):
    queue.enqueue(type="echo")
    completed_task()
    failed_task()
    heartbeats.beat(name="disp-1", node="node-a", pid=1, in_flight=2, processed=7)
    response = organism_admin_client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    counts = {c["status"]: c["count"] for c in response.context["counts"]}
    assert counts == {
        "QUEUED": 1,
        "RUNNING": 0,
        "COMPLETED": 1,
        "FAILED": 1,
        "RETRY": 0,
        "CANCELLED": 0,
    }
    stats = response.context["stats"]
    assert (stats.completed, stats.failed, stats.failure_rate) == (1, 1, 50.0)
    assert stats.latency_samples == 2
    html = response.content.decode()
    assert "disp-1" in html and "node-a" in html
    assert 'ws-connect="/ws/dashboard/"' in html
    # No monitor has sampled the Coordinator in this process yet: "checking", not "unhealthy".
    assert 'data-healthy="unknown"' in html and "checking…" in html
    assert "/static/vendor/htmx-2.0.11.min.js" in html


def test_overview_stats_partial_for_htmx(organism_admin_client):
    response = organism_admin_client.get(reverse("dashboard:overview") + "?partial=stats", **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "Last hour" in html


def test_task_list_filters_and_searches(organism_admin_client):
    echo = queue.enqueue(type="echo", domain="utility")
    other = queue.enqueue(type="resize_image", domain="media")
    response = organism_admin_client.get(reverse("dashboard:tasks"), {"type": "resize_image"})
    ids = [row["id"] for row in response.context["page"].items]
    assert ids == [other["id"]]
    response = organism_admin_client.get(reverse("dashboard:tasks"), {"q": echo["id"][:6]})
    assert [row["id"] for row in response.context["page"].items] == [echo["id"]]
    response = organism_admin_client.get(
        reverse("dashboard:tasks"), {"domain": "media", "status": "QUEUED"}
    )
    assert [row["id"] for row in response.context["page"].items] == [other["id"]]


def test_task_list_reports_bad_input_without_failing(organism_admin_client):
    response = organism_admin_client.get(
        reverse("dashboard:tasks"), {"q": "xyz", "status": "NOPE", "cursor": "!!"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "cursor is malformed" in html or "not a task ID" in html


def test_task_list_pages_by_keyset(organism_admin_client):
    queue.enqueue_many([{"type": "echo"} for _ in range(views.PAGE_SIZE + 3)])
    first = organism_admin_client.get(reverse("dashboard:tasks"))
    assert len(first.context["page"].items) == views.PAGE_SIZE
    assert first.context["next_query"]
    second = organism_admin_client.get(
        reverse("dashboard:tasks") + "?" + first.context["next_query"]
    )
    assert len(second.context["page"].items) == 3
    seen = {row["id"] for row in first.context["page"].items}
    assert seen.isdisjoint(row["id"] for row in second.context["page"].items)


def test_task_rows_partial_for_htmx(organism_admin_client):
    task = queue.enqueue(type="echo")
    response = organism_admin_client.get(reverse("dashboard:tasks") + "?partial=rows", **HTMX)
    html = response.content.decode()
    assert "<html" not in html and f'id="task-{task["id"]}"' in html


def test_bulk_retry_and_cancel_go_through_the_engine(organism_admin_client):
    failed = failed_task()
    done = completed_task()
    queued = queue.enqueue(type="echo")
    url = reverse("dashboard:task_bulk")
    response = organism_admin_client.post(
        url, {"action": "retry", "ids": [failed["id"], done["id"]]}, follow=True
    )
    assert selectors.get_task(failed["id"])["status"] == "QUEUED"
    assert selectors.get_task(done["id"])["status"] == "COMPLETED"
    text = response.content.decode()
    assert "Queued 1 task(s)" in text and "cannot run task" in text
    organism_admin_client.post(url, {"action": "cancel", "ids": [queued["id"]]})
    assert selectors.get_task(queued["id"])["status"] == "CANCELLED"


def test_retry_all_failed_is_a_preset_of_retry_all_matching(organism_admin_client):
    a1, a2 = failed_task("alpha"), failed_task("alpha")
    b = failed_task("beta")
    page = organism_admin_client.get(reverse("dashboard:tasks"), {"type": "alpha"}).content.decode()
    assert "action=retry&amp;type=alpha&amp;status=FAILED" in page
    confirm = organism_admin_client.get(
        reverse("dashboard:task_matching_confirm"),
        {"action": "retry", "type": "alpha", "status": "FAILED"},
    )
    assert "Retry 2 tasks matching this filter?" in confirm.content.decode()
    response = organism_admin_client.post(
        reverse("dashboard:task_matching_start"),
        {
            "action": "retry",
            "type": "alpha",
            "status": "FAILED",
            "snapshot_at": confirm.context["snapshot_at"],
        },
    )
    bulk_id = BulkAction.objects.get().pk
    assert response["Location"] == reverse("dashboard:task_matching", args=[bulk_id])
    assert [selectors.get_task(t["id"])["status"] for t in (a1, a2, b)] == [
        "QUEUED",
        "QUEUED",
        "FAILED",
    ]


def test_the_filter_form_searches_params_error_and_updated_time(organism_admin_client):
    match = queue.enqueue(type="echo", params={"customer": {"id": 42}, "x": 1})
    other = queue.enqueue(type="echo", params={"customer": {"id": 43}})
    response = organism_admin_client.get(
        reverse("dashboard:tasks"),
        {"params": '{"customer": {"id": 42}}', "updated_after": "2000-01-01T00:00"},
    )
    ids = [row["id"] for row in response.context["rows"]]
    assert ids == [match["id"]] and other["id"] not in ids
    assert response.context["filter_active"] and response.context["can_operate"]
    html = response.content.decode()
    assert "Cancel all matching" in html and "Retry all matching" in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"params": "customer=42"}, "params: must be a JSON object"),
        ({"params": "[42]"}, "params: must be a JSON object"),
        ({"created_after": "yesterday"}, "created_after: must be a date and time"),
        ({"updated_before": "2026-13-01T00:00"}, "updated_before: must be a date and time"),
    ],
)
def test_a_bad_search_value_is_a_form_error_naming_the_field(organism_admin_client, query, message):
    response = organism_admin_client.get(reverse("dashboard:tasks"), query)
    assert response.status_code == 200
    assert message in response.context["filter_error"]
    # And no action on all matching starts from it.
    confirm = organism_admin_client.get(
        reverse("dashboard:task_matching_confirm"), {"action": "cancel", **query}, follow=True
    )
    assert message in confirm.content.decode() and not BulkAction.objects.exists()


def test_cancel_all_matching_confirms_the_count_then_shows_progress(organism_admin_client):
    for n in range(3):
        queue.enqueue(type="echo", params={"customer": 42, "n": n})
    untouched = queue.enqueue(type="echo", params={"customer": 7})
    query = {"action": "cancel", "params": '{"customer": 42}'}
    confirm = organism_admin_client.get(reverse("dashboard:task_matching_confirm"), query)
    html = confirm.content.decode()
    assert "Cancel 3 tasks matching this filter?" in html and "Confirm: cancel 3 tasks" in html
    assert selectors.get_task(untouched["id"])["status"] == "QUEUED"
    started = organism_admin_client.post(
        reverse("dashboard:task_matching_start"),
        {**query, "snapshot_at": confirm.context["snapshot_at"]},
        follow=True,
    )
    progress = started.content.decode()
    assert 'data-state="finished"' in progress and "3</strong> of" in progress
    assert selectors.get_task(untouched["id"])["status"] == "QUEUED"
    bulk_id = BulkAction.objects.get().pk
    partial = organism_admin_client.get(
        reverse("dashboard:task_matching", args=[bulk_id]),
        {"partial": "progress"},
        headers={"HX-Request": "true"},
    )
    assert partial.templates[0].name == "dashboard/partials/matching_progress.html"
    assert "hx-trigger" not in partial.content.decode()  # finished: polling stops


def test_all_matching_needs_a_filter_and_a_confirmation(organism_admin_client):
    queue.enqueue(type="echo")
    no_filter = organism_admin_client.get(
        reverse("dashboard:task_matching_confirm"), {"action": "cancel"}, follow=True
    )
    assert "Set a filter first" in no_filter.content.decode()
    unconfirmed = organism_admin_client.post(
        reverse("dashboard:task_matching_start"), {"action": "cancel", "type": "echo"}, follow=True
    )
    assert "Confirm the action" in unconfirmed.content.decode()
    assert not BulkAction.objects.exists()
    assert (
        organism_admin_client.get(reverse("dashboard:task_matching", args=[999])).status_code == 404
    )


def test_an_interrupted_action_offers_to_continue(organism_admin_client):
    for _ in range(3):
        queue.enqueue(type="echo")
    task_filter = selectors.TaskFilter(type="echo")
    total, snapshot_at = bulk.count(task_filter)
    row = BulkAction.objects.create(
        action="cancel", filter=task_filter.describe(), snapshot_at=snapshot_at, total=total
    )
    BulkAction.objects.filter(pk=row.pk).update(
        updated_at=timezone.now() - bulk.STALE_AFTER - timedelta(seconds=5)
    )
    page = organism_admin_client.get(
        reverse("dashboard:task_matching", args=[row.pk])
    ).content.decode()
    assert "Interrupted" in page and "Continue from where it stopped" in page
    organism_admin_client.post(reverse("dashboard:task_matching_continue", args=[row.pk]))
    assert bulk.get(row.pk).state == "finished"
    assert set(Task.objects.values_list("status", flat=True)) == {"CANCELLED"}
    again = organism_admin_client.post(
        reverse("dashboard:task_matching_continue", args=[row.pk]), follow=True
    )
    assert "is not interrupted" in again.content.decode()


def test_task_detail_shows_history_routing_and_json(organism_admin_client):
    failed = failed_task(params={"size": 3})
    response = organism_admin_client.get(reverse("dashboard:task", args=[failed["id"]]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "ValueError: boom" in html and "&quot;size&quot;: 3" in html
    assert response.context["can_run"] and not response.context["can_cancel"]
    routed = completed_task(
        result={"output": 1, "routing": {"path": "ESCALATED", "organ_id": "o1", "agent_id": "a9"}}
    )
    html = organism_admin_client.get(
        reverse("dashboard:task", args=[routed["id"]])
    ).content.decode()
    assert "ESCALATED" in html and "a9" in html


def _run(outcome: str, log: str | None) -> tuple:
    """A run as the outcome writes take it (tasks.queue.RUN_FIELDS): it took 1.5 s."""
    where = ("ab" * 28, "10.0.0.7", 4242, "cd" * 16, "utility_organ_1")
    return (*where, 1796238000.0, 1796238001.5, outcome, log)


def test_task_detail_shows_each_run_with_its_log_a_system_badge_and_ray_links(
    organism_admin_client, settings
):
    task_id = queue.enqueue(type="echo")["id"]
    queue.claim(dispatcher="d1", batch=1)
    queue.fail(
        task_id=task_id,
        dispatcher="d1",
        attempt=1,
        error="system failure (node_died): agent a_agent_0 failed",
        run=_run("system", "[lost: node_died] agent a_agent_0 failed"),
        system="node_died",
    )
    queue.claim(dispatcher="d1", batch=1)
    log = "INFO app: <b>resizing</b>\nprinted line\n"
    queue.complete_many(dispatcher="d1", results=[(task_id, 2, 1, _run("completed", log))])
    url = reverse("dashboard:task", args=[task_id])

    settings.RAY_DASHBOARD_URL = ""
    html = organism_admin_client.get(url).content.decode()
    assert 'id="run-1"' in html and 'data-outcome="system"' in html
    assert "system failure: node_died" in html  # the badge, on the run and the failed attempt
    assert 'id="task-system-failures"' in html and "1 lost to Ray, not counted" in html
    assert "INFO app: &lt;b&gt;resizing&lt;/b&gt;\nprinted line" in html  # escaped
    assert "4242" in html and "10.0.0.7" in html and "1.500 s" in html
    assert "/#/actors/" not in html  # no dashboard set: no links

    settings.RAY_DASHBOARD_URL = "http://ray-head:8265"
    html = organism_admin_client.get(url).content.decode()
    assert f'href="http://ray-head:8265/#/cluster/nodes/{"ab" * 28}"' in html
    assert f'href="http://ray-head:8265/#/actors/{"cd" * 16}"' in html


def test_task_detail_by_prefix_and_unknown(organism_admin_client):
    task = queue.enqueue(type="echo")
    response = organism_admin_client.get(reverse("dashboard:task", args=[task["id"][:8]]))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:task", args=[task["id"]])
    assert (
        organism_admin_client.get(reverse("dashboard:task", args=["0000ffff"])).status_code == 404
    )
    assert organism_admin_client.get(reverse("dashboard:task", args=["zz"])).status_code == 404


def test_task_actions_run_now_and_cancel(organism_admin_client):
    failed = failed_task()
    url = reverse("dashboard:task_action", args=[failed["id"]])
    organism_admin_client.post(url, {"action": "run"})
    assert selectors.get_task(failed["id"])["status"] == "QUEUED"
    organism_admin_client.post(url, {"action": "cancel"})
    assert selectors.get_task(failed["id"])["status"] == "CANCELLED"
    done = completed_task()
    response = organism_admin_client.post(
        reverse("dashboard:task_action", args=[done["id"]]), {"action": "cancel"}, follow=True
    )
    assert "cannot cancel task" in response.content.decode()
    assert selectors.get_task(done["id"])["status"] == "COMPLETED"


def test_organism_page_says_when_the_coordinator_is_down(
    organism_admin_client, coordinator_down, settings
):
    settings.SEEDCORE_COORDINATOR_TIMEOUT = 0.3  # no dispatcher will take the control task
    response = organism_admin_client.get(reverse("dashboard:organism"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "does not answer" in html and 'data-healthy="no"' in html
    response = organism_admin_client.post(
        reverse("dashboard:organism_action"), {"action": "initialize"}, follow=True
    )
    assert "initialize failed" in response.content.decode()


# ---------------------------------------------------------------------------------------------
# The Task admin


@pytest.fixture
def admin_url():
    return lambda name, *args: reverse(f"admin:tasks_task_{name}", args=args)


def test_admin_changelist_searches_by_id_prefix(admin_client, admin_url):
    task = queue.enqueue(type="echo")
    queue.enqueue(type="echo")
    response = admin_client.get(admin_url("changelist"), {"q": task["id"][:6]})
    assert response.status_code == 200
    assert [str(t.id) for t in response.context["cl"].result_list] == [task["id"]]
    response = admin_client.get(admin_url("changelist"), {"q": "echo"})
    assert len(response.context["cl"].result_list) == 2


def test_admin_changelist_count_is_capped(admin_client, admin_url, monkeypatch):
    from tasks import admin as task_admin

    monkeypatch.setattr(task_admin, "ADMIN_COUNT_CAP", 5)
    queue.enqueue_many([{"type": "echo"} for _ in range(8)])
    response = admin_client.get(admin_url("changelist"))
    assert response.context["cl"].result_count == 5


def test_admin_actions_use_the_engine(admin_client, admin_url):
    failed, done = failed_task(), completed_task()
    response = admin_client.post(
        admin_url("changelist"),
        {"action": "run_now_action", "_selected_action": [failed["id"], done["id"]]},
        follow=True,
    )
    text = response.content.decode()
    assert "Queued 1 task(s)" in text and "Refused" in text
    assert selectors.get_task(failed["id"])["status"] == "QUEUED"
    admin_client.post(
        admin_url("changelist"), {"action": "cancel_action", "_selected_action": [failed["id"]]}
    )
    assert selectors.get_task(failed["id"])["status"] == "CANCELLED"


def _change_form(task: dict, **changes) -> dict:
    row = Task.objects.get(id=task["id"])
    data = {
        "type": row.type,
        "description": row.description or "",
        "domain": row.domain or "",
        "priority": row.priority,
        "max_attempts": row.max_attempts or "",
        "run_after_0": "",
        "run_after_1": "",
        "params": '{"a": 1}',
        "status": row.status,
    }
    data.update(changes)
    return data


def test_admin_status_edit_failed_to_queued_runs_now(admin_client, admin_url):
    failed = failed_task()
    response = admin_client.post(
        admin_url("change", failed["id"]), _change_form(failed, status="QUEUED")
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    task = selectors.get_task(failed["id"])
    # run_now's transition: a fresh set of attempts, the error cleared, its history kept.
    assert (task["status"], task["attempts"], task["error"]) == ("QUEUED", 0, None)
    assert len(task["error_history"]) == 1
    assert task["params"] == {"a": 1}


def test_admin_status_edit_refuses_other_transitions(admin_client, admin_url):
    done = completed_task()
    response = admin_client.post(
        admin_url("change", done["id"]), _change_form(done, status="QUEUED")
    )
    assert response.status_code == 200
    assert "cannot be run" in str(response.context["adminform"].form.errors)
    response = admin_client.post(
        admin_url("change", done["id"]), _change_form(done, status="RUNNING")
    )
    assert "can only be set to QUEUED" in str(response.context["adminform"].form.errors)
    assert selectors.get_task(done["id"])["status"] == "COMPLETED"


def _add_form(**changes) -> dict:
    data = {
        "type": "echo",
        "description": "",
        "domain": "",
        "drift_score": 0.7,
        "priority": 0,
        "max_attempts": "",
        "run_after_0": "",
        "run_after_1": "",
        "params": '{"x": 1}',
    }
    return {**data, **changes}


def test_admin_add_enqueues(admin_client, admin_url):
    response = admin_client.post(admin_url("add"), _add_form())
    assert response.status_code == 302
    (task,) = Task.objects.all()
    assert (task.type, task.status, task.params) == ("echo", "QUEUED", {"x": 1})
    assert task.drift_score == 0.7  # an admin can submit a task for the escalated path


@pytest.mark.parametrize(
    "params, why",
    [
        ('{"text": "nul \\u0000 here"}', "must not hold NUL characters"),
        ('{"deep": ' + "[" * MAX_PARAMS_DEPTH + "]" * MAX_PARAMS_DEPTH + "}", "levels deep"),
        ('{"big": "' + "x" * MAX_PARAMS_BYTES + '"}', f"larger than {MAX_PARAMS_BYTES} bytes"),
        ('{"nan": NaN}', "NaN or Infinity"),
        ("[1, 2]", "valid dictionary"),
    ],
)
def test_admin_add_refuses_params_the_api_refuses(admin_client, admin_url, params, why):
    response = admin_client.post(admin_url("add"), _add_form(params=params))
    assert response.status_code == 200
    assert why in str(response.context["adminform"].form.errors["params"])
    assert not Task.objects.exists()


def test_admin_add_applies_the_api_limits_to_every_field(admin_client, admin_url):
    form = _add_form(type="t" * (MAX_TYPE_LENGTH + 1), drift_score=1.5, priority=5000)
    errors = admin_client.post(admin_url("add"), form).context["adminform"].form.errors
    assert set(errors) == {"type", "drift_score", "priority"}
    assert not Task.objects.exists()


def test_admin_edit_checks_only_the_fields_it_changes(admin_client, admin_url):
    task = queue.enqueue(type="echo")
    Task.objects.filter(id=task["id"]).update(domain="d" * (MAX_DOMAIN_LENGTH + 1))
    form = _change_form(task, domain="d" * (MAX_DOMAIN_LENGTH + 1), params='{"ok": "\\u0000"}')
    response = admin_client.post(admin_url("change", task["id"]), form)
    assert set(response.context["adminform"].form.errors) == {"params"}
    form = _change_form(task, domain="d" * (MAX_DOMAIN_LENGTH + 1), priority=7)
    assert admin_client.post(admin_url("change", task["id"]), form).status_code == 302
    assert selectors.get_task(task["id"])["priority"] == 7
