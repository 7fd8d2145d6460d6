"""The permission model (issue #15 finding 1), role by surface: what a member of each group (and a
staff member in none) may do on the dashboard, the API by session and by token, the admin's
actions; and the groups the migration makes. The websocket's side is in
tests/dashboard/test_consumers.py."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from tasks import permissions, queue, selectors
from tasks.auth import create_token
from tasks.models import Status
from tests.conftest import OPERATOR, ORGANISM_ADMIN, ROLES, VIEWER
from tests.dashboard.conftest import failed_task

pytestmark = pytest.mark.django_db

NOBODY = None  # a staff member in no group: the admin refuses them, and so does SeedCore
ALL_ROLES = [NOBODY, *ROLES]
MAY_READ = {VIEWER, OPERATOR, ORGANISM_ADMIN}
MAY_OPERATE = {OPERATOR, ORGANISM_ADMIN}
MAY_CONTROL = {ORGANISM_ADMIN}


def _id(role: str | None) -> str:
    return "staff-without-permissions" if role is None else role.replace(" ", "-")


by_role = pytest.mark.parametrize("role", ALL_ROLES, ids=_id)


@pytest.fixture
def controls(monkeypatch) -> list[str]:
    """Organism control that would reach the Coordinator, recorded instead (no Ray here)."""
    ran: list[str] = []
    monkeypatch.setattr(
        "organism.api.run_control", lambda kind, params=None, **options: ran.append(kind)
    )
    monkeypatch.setattr(
        "organism.control.run_control", lambda kind, params=None, **options: ran.append(kind)
    )
    return ran


def _signed_in(make_user, role: str | None, **fields) -> Client:
    client = Client()
    client.force_login(make_user("someone", role, is_staff=True, **fields))
    return client


# ---------------------------------------------------------------------------------------------
# The rule and the groups


@pytest.mark.parametrize("scope", permissions.SCOPES)
def test_the_migration_makes_each_group_with_its_scopes_permissions(scope):
    group = Group.objects.get(name=permissions.SCOPE_GROUPS[scope])
    held = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
    assert held == set(permissions.group_permissions(scope))


@pytest.mark.django_db(transaction=True)
def test_the_group_migration_reverses_and_applies_again():
    call_command("migrate", "tasks", "0009", verbosity=0)
    assert not Group.objects.filter(name__in=permissions.SCOPE_GROUPS.values()).exists()
    call_command("migrate", "tasks", verbosity=0)
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator"}
    operator = Group.objects.get(name="organism admin")
    assert operator.permissions.count() == 3


def test_user_scope_is_the_widest_scope_held_with_every_narrower_one(make_user):
    assert permissions.user_scope(None) is None
    assert permissions.user_scope(AnonymousUser()) is None
    assert permissions.user_scope(make_user("staff", NOBODY, is_staff=True)) is None
    assert permissions.user_scope(make_user("v", VIEWER)) == permissions.READ
    assert permissions.user_scope(make_user("o", OPERATOR)) == permissions.OPERATE
    assert permissions.user_scope(make_user("a", ORGANISM_ADMIN)) == permissions.ADMIN
    assert permissions.user_scope(make_user("root", NOBODY, is_superuser=True)) == permissions.ADMIN
    assert permissions.user_scope(make_user("off", ORGANISM_ADMIN, is_active=False)) is None
    # Operating without the right to read is not a scope: every narrower one is needed too.
    odd = make_user("odd", NOBODY)
    odd.user_permissions.add(Permission.objects.get(codename="operate_task"))
    assert permissions.user_scope(odd) is None


# ---------------------------------------------------------------------------------------------
# Dashboard: pages, buttons, and actions POSTed directly


@by_role
def test_dashboard_pages_need_the_viewer_permission(make_user, role):
    client = _signed_in(make_user, role)
    task = queue.enqueue(type="echo")
    for url in (
        reverse("dashboard:overview"),
        reverse("dashboard:tasks"),
        reverse("dashboard:task", args=[task["id"]]),
        reverse("dashboard:organism"),
    ):
        response = client.get(url)
        if role in MAY_READ:
            assert response.status_code == 200, url
        else:
            assert response.status_code == 403, url
            assert "add you to the &#x27;viewer&#x27; group" in response.content.decode()


@pytest.mark.parametrize("role", ROLES, ids=_id)
def test_the_dashboard_shows_only_the_buttons_the_user_may_use(make_user, role):
    client = _signed_in(make_user, role)
    task = failed_task()
    listing = client.get(reverse("dashboard:tasks")).content.decode()
    detail = client.get(reverse("dashboard:task", args=[task["id"]])).content.decode()
    organism = client.get(reverse("dashboard:organism")).content.decode()
    may_operate = role in MAY_OPERATE
    assert ("Retry selected" in listing) is may_operate
    assert ('name="ids"' in listing) is may_operate
    assert ("Retry all FAILED" in listing) is may_operate
    assert ("Run now" in detail) is may_operate
    assert ("Shut down" in organism) is (role in MAY_CONTROL)
    assert ("Initialize" in organism) is (role in MAY_CONTROL)


@by_role
def test_the_server_refuses_dashboard_actions_the_user_may_not_take(make_user, role, controls):
    client = _signed_in(make_user, role)
    one, two, three = failed_task(), failed_task(), failed_task()
    may_operate = role in MAY_OPERATE

    run = client.post(reverse("dashboard:task_action", args=[one["id"]]), {"action": "run"})
    bulk = client.post(reverse("dashboard:task_bulk"), {"action": "retry", "ids": [two["id"]]})
    assert (run.status_code, bulk.status_code) == ((302, 302) if may_operate else (403, 403))
    assert selectors.get_task(one["id"])["status"] == (Status.QUEUED if may_operate else "FAILED")
    assert selectors.get_task(two["id"])["status"] == (Status.QUEUED if may_operate else "FAILED")

    retry_all = client.post(
        reverse("dashboard:task_matching_start"),
        {
            "action": "retry",
            "status": "FAILED",
            "snapshot_at": selectors.database_now().isoformat(),
        },
    )
    assert retry_all.status_code == (302 if may_operate else 403)
    assert selectors.get_task(three["id"])["status"] == (
        Status.QUEUED if may_operate else Status.FAILED
    )

    shutdown = client.post(reverse("dashboard:organism_action"), {"action": "shutdown"})
    assert shutdown.status_code == (302 if role in MAY_CONTROL else 403)
    assert controls == (["shutdown_organism"] if role in MAY_CONTROL else [])


def test_an_anonymous_action_goes_to_the_login_page_and_does_nothing():
    task = failed_task()
    response = Client().post(reverse("dashboard:task_action", args=[task["id"]]), {"action": "run"})
    assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/")
    assert selectors.get_task(task["id"])["status"] == Status.FAILED


# ---------------------------------------------------------------------------------------------
# API: by session, and by token (capped by the owner's permissions now)


def _api_calls(client: Client, controls: list[str]) -> dict[str, int]:
    """What each kind of API call answers, and that nothing refused had an effect."""
    task = failed_task()
    answers = {
        "read": client.get("/tasks").status_code,
        "metrics": client.get("/metrics").status_code,
        "submit": client.post("/tasks", {"type": "echo"}, "application/json").status_code,
        "run": client.post(f"/tasks/{task['id']}/run").status_code,
        "submit control": client.post(
            "/tasks", {"type": "shutdown_organism"}, "application/json"
        ).status_code,
        "control": client.post("/organism/shutdown").status_code,
    }
    ran = answers["run"] == 200
    assert selectors.get_task(task["id"])["status"] == (Status.QUEUED if ran else Status.FAILED)
    assert controls == (["shutdown_organism"] if answers["control"] == 200 else [])
    return answers


def _expected(role: str | None) -> dict[str, int]:
    reads = 200 if role in MAY_READ else 403
    operates = role in MAY_OPERATE
    controls = role in MAY_CONTROL
    return {
        "read": reads,
        "metrics": 200 if role in MAY_READ else 401,
        "submit": 201 if operates else 403,
        "run": 200 if operates else 403,
        "submit control": 201 if controls else 403,
        "control": 200 if controls else 403,
    }


@by_role
def test_the_api_by_session_allows_what_the_users_group_allows(make_user, role, controls):
    assert _api_calls(_signed_in(make_user, role), controls) == _expected(role)


@by_role
def test_an_admin_token_does_no_more_than_its_owner_may(make_user, role, controls):
    owner = make_user("owner", role)
    token = Client(headers={"Authorization": f"Bearer {create_token(owner, scope='admin')[1]}"})
    assert _api_calls(token, controls) == _expected(role)


def test_moving_the_owner_to_a_narrower_group_narrows_the_token_at_once(make_user):
    owner = make_user("owner", OPERATOR)
    token = Client(headers={"Authorization": f"Bearer {create_token(owner, scope='admin')[1]}"})
    assert token.post("/tasks", {"type": "echo"}, "application/json").status_code == 201
    owner.groups.set([Group.objects.get(name=VIEWER)])
    refused = token.post("/tasks", {"type": "echo"}, "application/json")
    assert refused.status_code == 403 and "'operator' group" in refused.json()["detail"]
    assert token.get("/tasks").status_code == 200


# ---------------------------------------------------------------------------------------------
# Admin: its actions and its add form follow the same rule


@by_role
def test_admin_actions_need_the_operator_permission(make_user, role):
    client = _signed_in(make_user, role)
    task = failed_task()
    listing = client.get("/admin/tasks/task/")
    assert listing.status_code == (200 if role in MAY_READ else 403)
    if role in MAY_READ:
        assert ("run_now_action" in listing.content.decode()) is (role in MAY_OPERATE)
    client.post(
        "/admin/tasks/task/", {"action": "run_now_action", "_selected_action": [task["id"]]}
    )
    expected = Status.QUEUED if role in MAY_OPERATE else Status.FAILED
    assert selectors.get_task(task["id"])["status"] == expected


@by_role
def test_adding_a_task_in_the_admin_needs_the_operator_permission(make_user, role):
    response = _signed_in(make_user, role).post(
        "/admin/tasks/task/add/", {"type": "echo", "priority": 0, "drift_score": 0, "params": "{}"}
    )
    assert response.status_code == (302 if role in MAY_OPERATE else 403)
    assert selectors.count_by_status()["QUEUED"].count == (1 if role in MAY_OPERATE else 0)


@pytest.mark.parametrize("role", [OPERATOR, ORGANISM_ADMIN], ids=_id)
def test_queueing_a_control_type_in_the_admin_needs_the_organism_admin(make_user, role):
    response = _signed_in(make_user, role).post(
        "/admin/tasks/task/add/",
        {"type": "shutdown_organism", "priority": 0, "drift_score": 0, "params": "{}"},
    )
    if role in MAY_CONTROL:
        assert response.status_code == 302
    else:
        assert response.status_code == 200
        assert "organism admin" in response.content.decode()
    queued = selectors.count_by_status()["QUEUED"].count
    assert queued == (1 if role in MAY_CONTROL else 0)


# ---------------------------------------------------------------------------------------------
# setrole


def _setrole(*args: str) -> str:
    out = io.StringIO()
    call_command("setrole", *args, stdout=out)
    return out.getvalue()


def test_setrole_replaces_the_users_role_and_says_what_they_may_do(make_user):
    user = make_user("alice", VIEWER)
    other = Group.objects.create(name="billing")
    user.groups.add(other)
    assert _setrole("alice", "organism-admin") == "alice may now: read, operate, admin.\n"
    assert set(user.groups.values_list("name", flat=True)) == {"organism admin", "billing"}
    assert _setrole("alice", "operator") == "alice may now: read, operate.\n"
    assert permissions.user_scope(type(user).objects.get(pk=user.pk)) == permissions.OPERATE
    assert _setrole("alice", "none") == "alice may now: nothing.\n"
    assert list(user.groups.values_list("name", flat=True)) == ["billing"]


def test_setrole_refuses_an_unknown_user_or_role(make_user):
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        _setrole("ghost", "viewer")
    bob = make_user("bob", VIEWER)
    with pytest.raises(CommandError, match="role must be one of 'viewer', 'operator'"):
        _setrole("bob", "root")
    assert permissions.user_scope(type(bob).objects.get(pk=bob.pk)) == permissions.READ


# ---------------------------------------------------------------------------------------------
# Schedules and the audit trail follow the same rule


def _schedule():
    from tasks import schedules
    from tasks.models import Schedule

    return schedules.save(Schedule(name="hourly", type="echo", interval_seconds=3600))


@by_role
def test_schedule_pages_audit_and_pausing_follow_the_role(make_user, role):
    client = _signed_in(make_user, role)
    schedule = _schedule()
    for url in (
        reverse("dashboard:schedules"),
        reverse("dashboard:schedule", args=[schedule.pk]),
        reverse("dashboard:audit"),
    ):
        assert client.get(url).status_code == (200 if role in MAY_READ else 403), url
    page = client.get(reverse("dashboard:schedule", args=[schedule.pk])).content.decode()
    assert ('value="pause"' in page) is (role in MAY_OPERATE)
    paused = client.post(
        reverse("dashboard:schedule_action", args=[schedule.pk]), {"action": "pause"}
    )
    assert paused.status_code == (302 if role in MAY_OPERATE else 403)
    schedule.refresh_from_db()
    assert schedule.enabled is (role not in MAY_OPERATE)
    by_api = client.post(f"/schedules/{schedule.pk}/resume")
    assert by_api.status_code == (200 if role in MAY_OPERATE else 403)


@by_role
def test_schedule_admin_actions_need_the_operator_permission(make_user, role):
    client = _signed_in(make_user, role)
    schedule = _schedule()
    listing = client.get("/admin/tasks/schedule/")
    assert listing.status_code == (200 if role in MAY_READ else 403)
    client.post(
        "/admin/tasks/schedule/", {"action": "pause_action", "_selected_action": [schedule.pk]}
    )
    schedule.refresh_from_db()
    assert schedule.enabled is (role not in MAY_OPERATE)


@pytest.mark.parametrize("role", [OPERATOR, ORGANISM_ADMIN], ids=_id)
def test_a_schedule_of_a_control_type_needs_the_organism_admin(make_user, role):
    from tasks.models import Schedule

    response = _signed_in(make_user, role).post(
        "/admin/tasks/schedule/add/",
        {
            "name": "nightly shutdown",
            "type": "shutdown_organism",
            "params": "{}",
            "priority": 0,
            "interval_seconds": 86400,
            "timezone": "UTC",
            "catch_up": "skip",
            "enabled": "on",
        },
    )
    made = Schedule.objects.filter(type="shutdown_organism").exists()
    assert made is (role in MAY_CONTROL), response.content.decode()[-3000:]
    if role not in MAY_CONTROL:
        assert "organism admin" in response.content.decode()


# ---------------------------------------------------------------------------------------------
# Running an organism control task again is organism control, however it is asked for


def _control_types_queued(task_type: str) -> int:
    return len(selectors.list_tasks(selectors.TaskFilter(type=task_type, status="QUEUED")).items)


@pytest.mark.parametrize("role", [OPERATOR, ORGANISM_ADMIN], ids=_id)
def test_running_a_control_task_again_needs_the_organism_admin(make_user, role):
    from tasks import schedules
    from tasks.models import Schedule

    user = make_user("someone", role)
    client = Client()
    client.force_login(user)
    allowed = role in MAY_CONTROL

    # Made first: failed_task claims the top-priority QUEUED task, which a run now makes.
    control, ordinary = failed_task("shutdown_organism"), failed_task("echo")
    again = failed_task("shutdown_organism")
    client.post(reverse("dashboard:task_action", args=[control["id"]]), {"action": "run"})
    assert (selectors.get_task(control["id"])["status"] == Status.QUEUED) is allowed
    client.post(reverse("dashboard:task_action", args=[ordinary["id"]]), {"action": "run"})
    assert selectors.get_task(ordinary["id"])["status"] == Status.QUEUED  # operators may

    api = Client(headers={"Authorization": f"Bearer {create_token(user, scope='admin')[1]}"})
    response = api.post(f"/tasks/{again['id']}/run")
    assert response.status_code == (200 if allowed else 403), response.content
    assert (selectors.get_task(again["id"])["status"] == Status.QUEUED) is allowed

    schedule = schedules.save(
        Schedule(name="restart", type="initialize_organism", interval_seconds=3600)
    )
    client.post(reverse("dashboard:schedule_action", args=[schedule.pk]), {"action": "run"})
    assert _control_types_queued("initialize_organism") == (1 if allowed else 0)

    body = {"action": "retry", "filter": {"status": "FAILED"}}
    response = api.post("/tasks/bulk", body, content_type="application/json")
    assert response.status_code == (202 if allowed else 403), response.content
