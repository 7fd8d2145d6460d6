"""The audit trail (issue #14): every operator action is recorded with who, when, what and from
where, in the transaction of the change; the task page, the audit page and GET /audit read it."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from organism import control
from tasks import audit, queue, selectors
from tasks.auth import create_token
from tasks.models import ApiToken, AuditEntry, Status
from tests.dashboard.conftest import completed_task, failed_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("alice", password="pw")


@pytest.fixture
def dashboard(client, operator) -> Client:
    client.force_login(operator)
    return client


@pytest.fixture
def token_client(operator):
    row, token = create_token(operator, name="ci", scope="admin")
    return row, Client(headers={"Authorization": f"Bearer {token}"})


def entries(**filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("id"))


def test_an_api_cancel_names_the_user_the_token_and_the_address(token_client):
    row, api = token_client
    task = queue.enqueue(type="echo")
    assert api.post(f"/tasks/{task['id']}/cancel").status_code == 200
    (entry,) = entries()
    assert entry.actor == f"alice (token {row})"
    assert (entry.via, entry.action, entry.target) == ("api", "task.cancel", "echo")
    assert str(entry.task_id) == task["id"]
    assert entry.address == "127.0.0.1"
    assert entry.at is not None


def test_a_refused_action_leaves_no_entry(token_client):
    _, api = token_client
    task = completed_task()
    assert api.post(f"/tasks/{task['id']}/cancel").status_code == 409
    assert entries() == []


def test_get_audit_pages_newest_first_and_narrows_to_one_task(token_client):
    _, api = token_client
    tasks = [queue.enqueue(type="echo") for _ in range(3)]
    for task in tasks:
        api.post(f"/tasks/{task['id']}/cancel")
    api.post(f"/tasks/{tasks[0]['id']}/run")

    first = api.get("/audit", {"limit": 2}).json()
    assert [item["action"] for item in first["items"]] == ["task.run_now", "task.cancel"]
    rest = api.get("/audit", {"limit": 2, "cursor": first["next_cursor"]}).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    item = first["items"][0]
    assert set(item) == {
        "id", "at", "actor", "via", "address", "action", "target", "task_id", "detail"
    }  # fmt: skip

    one = api.get("/audit", {"task": tasks[0]["id"][:8]}).json()["items"]
    assert [e["action"] for e in one] == ["task.run_now", "task.cancel"]
    assert {e["task_id"] for e in one} == {tasks[0]["id"]}
    assert [e["action"] for e in api.get("/audit", {"action": "run"}).json()["items"]] == [
        "task.run_now"
    ]


def test_get_audit_refuses_bad_input_with_a_4xx_naming_it(token_client):
    _, api = token_client
    assert api.get("/audit", {"cursor": "forged"}).status_code == 400
    assert api.get("/audit", {"task": "xyz"}).status_code == 400
    response = api.get("/audit", {"via": "carrier-pigeon"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "via"


def test_get_audit_needs_credentials(client):
    assert client.get("/audit").status_code == 401


def test_the_dashboard_records_its_actions_and_the_task_page_lists_them(dashboard):
    task = failed_task()
    dashboard.post(f"/dashboard/tasks/{task['id']}/action/", {"action": "run"})
    (entry,) = entries()
    assert (entry.actor, entry.via, entry.action) == ("alice", "dashboard", "task.run_now")

    page = dashboard.get(f"/dashboard/tasks/{task['id']}/").content.decode()
    assert "Operator actions" in page and "task.run_now" in page and "alice" in page


def test_selected_rows_record_one_entry_per_task(dashboard):
    tasks = [queue.enqueue(type="echo") for _ in range(3)]
    done = completed_task()
    ids = [task["id"] for task in tasks] + [done["id"]]
    dashboard.post("/dashboard/tasks/bulk/", {"ids": ids, "action": "cancel"})
    recorded = entries(action="task.cancel")
    assert sorted(str(e.task_id) for e in recorded) == sorted(t["id"] for t in tasks)


def test_acting_on_all_that_match_records_its_filter_and_count(token_client):
    for _ in range(3):
        failed_task(type="flaky")
    failed_task(type="other")
    _, api = token_client
    body = {"action": "retry", "filter": {"type": "flaky", "status": "FAILED"}}
    response = api.post("/tasks/bulk", body, content_type="application/json")
    assert response.status_code == 202, response.content
    (entry,) = entries(action="tasks.retry_matching")
    assert entry.via == "api" and entry.target == "3 task(s)"
    assert entry.detail == {
        "filter": {"status": "FAILED", "type": "flaky"},
        "count": 3,
        "bulk_action": response.json()["id"],
    }


def test_the_audit_page_lists_and_filters(dashboard):
    audit.record(audit.Actor("bob", "cli"), "task.cancel", target="echo")
    audit.record(audit.Actor("carol", "api"), "organism.shutdown_organism")
    page = dashboard.get("/dashboard/audit/").content.decode()
    assert "bob" in page and "carol" in page
    page = dashboard.get("/dashboard/audit/", {"via": "cli"}).content.decode()
    assert "bob" in page and "carol" not in page
    page = dashboard.get("/dashboard/audit/", {"task": "zz"}).content.decode()
    assert "is not a task ID" in page
    assert (
        dashboard.get("/dashboard/audit/", {"cursor": "forged", "via": "bogus"}).status_code == 200
    )


def test_admin_actions_and_edits_are_recorded(dashboard):
    task = failed_task()
    dashboard.post(
        "/admin/tasks/task/",
        {"action": "run_now_action", "_selected_action": [task["id"]]},
    )
    (entry,) = entries(action="task.run_now")
    assert (entry.via, str(entry.task_id)) == ("admin", task["id"])

    queued = queue.enqueue(type="echo", params={"a": 1})
    change = dashboard.get(f"/admin/tasks/task/{queued['id']}/change/")
    assert change.status_code == 200
    form = {
        "type": "echo",
        "status": "QUEUED",
        "description": "",
        "domain": "",
        "priority": "7",
        "max_attempts": "",
        "run_after_0": "",
        "run_after_1": "",
        "params": '{"a": 1}',
    }
    response = dashboard.post(f"/admin/tasks/task/{queued['id']}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    (edit,) = entries(action="task.change")
    assert str(edit.task_id) == queued["id"] and "Priority" in edit.detail["change"]


def test_cli_actions_name_the_shell_user(monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "deploy")
    task = queue.enqueue(type="echo")
    call_command("tasks", "cancel", task["id"], stdout=io.StringIO())
    (entry,) = entries()
    assert (entry.actor, entry.via, entry.action) == ("deploy", "cli", "task.cancel")


def test_token_creation_and_revocation_are_recorded(dashboard, monkeypatch, operator):
    monkeypatch.setattr("getpass.getuser", lambda: "deploy")
    call_command("createapitoken", "alice", "--scope", "operate", stdout=io.StringIO(),
                 stderr=io.StringIO())  # fmt: skip
    (created,) = entries(action="token.create")
    assert created.via == "cli" and created.target.endswith("of alice")
    assert created.detail == {"scope": "operate"}

    token = ApiToken.objects.get()
    dashboard.post(
        "/admin/tasks/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    (revoked,) = entries(action="token.revoke")
    assert (revoked.actor, revoked.via) == ("alice", "admin")


def test_organism_control_is_recorded_even_when_nothing_takes_it(operator):
    actor = audit.Actor("alice", "dashboard", "10.0.0.9")
    with pytest.raises(control.ControlUnavailable):
        control.run_control("shutdown_organism", actor=actor, timeout=0.01)
    (entry,) = entries()
    assert (entry.action, entry.address) == ("organism.shutdown_organism", "10.0.0.9")
    assert selectors.get_task(str(entry.task_id))["status"] == Status.CANCELLED


def test_submitting_a_control_type_is_recorded_but_ordinary_submits_are_not(token_client):
    _, api = token_client
    assert api.post("/tasks", {"type": "echo"}, content_type="application/json").status_code == 201
    assert entries() == []
    response = api.post("/tasks", {"type": "initialize_organism"}, content_type="application/json")
    assert response.status_code == 201
    (entry,) = entries()
    assert entry.action == "organism.initialize_organism"
    assert str(entry.task_id) == response.json()["id"]


def test_prune_removes_only_entries_past_retention():
    actor = audit.Actor("bob", "cli")
    audit.record(actor, "task.cancel")
    audit.record(actor, "task.run_now")
    AuditEntry.objects.filter(action="task.cancel").update(at=timezone.now() - timedelta(days=400))
    assert audit.prune(365, batch_size=1) == 1
    assert [e.action for e in entries()] == ["task.run_now"]


def test_schedule_actions_are_recorded_from_the_dashboard_the_api_and_the_admin(
    dashboard, token_client
):
    from tasks import schedules
    from tasks.models import Schedule

    schedule = schedules.save(Schedule(name="nightly", type="echo", interval_seconds=60))
    dashboard.post(f"/dashboard/schedules/{schedule.pk}/action/", {"action": "run"})
    (ran,) = entries(action="schedule.run_now")
    assert (ran.via, ran.target) == ("dashboard", "nightly")
    assert Schedule.objects.get(pk=schedule.pk).last_task_id == ran.task_id

    _, api = token_client
    assert api.post(f"/schedules/{schedule.pk}/pause").status_code == 200
    (paused,) = entries(action="schedule.pause")
    assert (paused.via, paused.target) == ("api", "nightly")

    dashboard.post(
        "/admin/tasks/schedule/",
        {"action": "resume_action", "_selected_action": [schedule.pk]},
    )
    (resumed,) = entries(action="schedule.resume")
    assert (resumed.via, resumed.actor) == ("admin", "alice")


def test_queue_controls_are_recorded_from_the_api_the_dashboard_and_the_cli(
    dashboard, token_client, monkeypatch
):
    _, api = token_client
    paused = api.post("/queue/pause", {"type": "report"}, content_type="application/json")
    assert paused.status_code == 200, paused.content
    dashboard.post("/dashboard/queue/", {"action": "limit", "type": "report", "limit": "2"})
    monkeypatch.setattr("getpass.getuser", lambda: "deploy")
    call_command("tasks", "resume", stdout=io.StringIO())
    recorded = [(e.action, e.via, e.target, e.detail) for e in entries()]
    assert recorded == [
        ("queue.pause", "api", "report", {}),
        ("queue.limit", "dashboard", "report", {"limit": 2}),
        ("queue.resume", "cli", "all types", {}),
    ]
