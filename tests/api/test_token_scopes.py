"""Scoped tokens (issue #15 finding 2): a token does at most its scope, never more than its
owner may do now (tasks.permissions: the owner's groups), until it expires."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from organism import control
from tasks import selectors
from tasks.auth import create_token
from tasks.models import ApiToken

pytestmark = pytest.mark.django_db


def _client(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def staff(make_user):
    """A user who may do everything (the organism admin group), so a token's scope decides."""
    return make_user("ops", "organism admin")


@pytest.fixture
def control_refused(monkeypatch):
    """Organism control never reaches a dispatcher here: a refused call must not get this far."""

    def run_control(task_type, params=None, **kwargs):
        raise AssertionError(f"{task_type} ran")

    monkeypatch.setattr("organism.api.run_control", run_control)
    return control


def _queued() -> int:
    return selectors.count_by_status()["QUEUED"].count


@pytest.mark.parametrize("is_staff", [False, True])
def test_the_token_of_a_user_without_permissions_can_do_nothing(
    make_user, control_refused, is_staff
):
    plain = make_user("plain", None, is_staff=is_staff)
    api = _client(create_token(plain, scope="admin")[1])
    created = api.post("/tasks", {"type": "echo"}, content_type="application/json")
    assert created.status_code == 403 and "token's owner lacks it" in created.json()["detail"]
    shutdown = api.post("/tasks", {"type": "shutdown_organism"}, content_type="application/json")
    assert shutdown.status_code == 403
    assert api.post("/organism/shutdown").status_code == 403
    assert api.get("/tasks").status_code == 403
    assert api.get("/metrics").status_code == 401
    assert _queued() == 0


def test_demoting_the_owner_disarms_the_token_at_once(staff):
    api = _client(create_token(staff, scope="operate")[1])
    assert api.post("/tasks", {"type": "echo"}, content_type="application/json").status_code == 201
    assert api.get("/metrics").status_code == 200
    staff.groups.clear()
    assert api.post("/tasks", {"type": "echo"}, content_type="application/json").status_code == 403
    assert api.get("/tasks").status_code == 403
    assert api.get("/metrics").status_code == 401
    assert _queued() == 1


def test_a_read_token_reads_only(staff, control_refused):
    api = _client(create_token(staff)[1])  # read is the default
    assert ApiToken.objects.get().scope == "read"
    assert api.get("/tasks").status_code == 200
    assert api.get("/metrics").status_code == 200
    refused = api.post("/tasks", {"type": "echo"}, content_type="application/json")
    assert refused.status_code == 403 and "'operate'" in refused.json()["detail"]
    task = selectors.get_task(
        _client(create_token(staff, scope="operate")[1])
        .post("/tasks", {"type": "echo"}, content_type="application/json")
        .json()["id"]
    )
    assert api.post(f"/tasks/{task['id']}/cancel").status_code == 403
    assert api.post(f"/tasks/{task['id']}/run").status_code == 403
    assert selectors.get_task(task["id"])["status"] == "QUEUED"


def test_an_operate_token_operates_but_does_not_control_the_organism(staff, control_refused):
    api = _client(create_token(staff, scope="operate")[1])
    task = api.post("/tasks", {"type": "echo"}, content_type="application/json").json()
    assert api.post(f"/tasks/{task['id']}/cancel").status_code == 200
    for kind in ("shutdown_organism", "initialize_organism"):
        queued = api.post("/tasks", {"type": kind}, content_type="application/json")
        assert queued.status_code == 403 and "'admin'" in queued.json()["detail"]
    assert api.post("/organism/shutdown").status_code == 403
    assert api.post("/organism/initialize").status_code == 403
    assert (
        api.post("/organism/execute-random", {"type": "echo"}, "application/json").status_code
        == 403
    )
    assert _queued() == 0


def test_an_admin_token_controls_the_organism(staff, monkeypatch):
    ran = []
    monkeypatch.setattr(
        "organism.api.run_control", lambda kind, params=None, **options: ran.append(kind)
    )
    api = _client(create_token(staff, scope="admin")[1])
    assert api.post("/organism/shutdown").status_code == 200
    assert ran == ["shutdown_organism"]
    queued = api.post("/tasks", {"type": "shutdown_organism"}, content_type="application/json")
    assert queued.status_code == 201


def test_an_expired_token_is_refused(staff):
    row, token = create_token(staff, scope="admin", expires_at=timezone.now() + timedelta(hours=1))
    assert _client(token).get("/tasks").status_code == 200
    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _client(token).get("/tasks")
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert _client(token).get("/metrics").status_code == 401


def test_a_session_keeps_its_users_full_power(client, staff, control_refused):
    client.force_login(staff)
    assert (
        client.post("/tasks", {"type": "echo"}, content_type="application/json").status_code == 201
    )


def test_createapitoken_takes_a_scope_and_an_expiry(staff):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "createapitoken", "ops", "--scope", "operate", "--expires", "30d", stdout=out, stderr=err
    )
    row = ApiToken.objects.get()
    assert row.scope == "operate" and "operate token" in err.getvalue()
    left = row.expires_at - timezone.now()
    assert timedelta(days=29, hours=23) < left <= timedelta(days=30)
    api = _client(out.getvalue().strip())
    assert api.post("/tasks", {"type": "echo"}, content_type="application/json").status_code == 201
    with pytest.raises(CommandError, match="30d"):
        call_command("createapitoken", "ops", "--expires", "soon")
    with pytest.raises(CommandError):
        call_command("createapitoken", "ops", "--scope", "root")


def test_createapitoken_refuses_a_user_without_permissions(make_user):
    make_user("plain", None, is_staff=True)
    with pytest.raises(CommandError, match="no SeedCore permission.*viewer, operator"):
        call_command("createapitoken", "plain", stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiToken.objects.exists()


def test_createapitoken_warns_when_the_scope_is_wider_than_the_owner(make_user):
    make_user("watcher", "viewer")
    err = io.StringIO()
    call_command("createapitoken", "watcher", "--scope", "admin", stdout=io.StringIO(), stderr=err)
    assert "may only read now" in err.getvalue()


def test_the_admin_shows_a_tokens_scope(admin_client, staff):
    create_token(staff, name="ci", scope="operate")
    page = admin_client.get("/admin/tasks/apitoken/")
    assert page.status_code == 200 and "operate" in page.content.decode()
