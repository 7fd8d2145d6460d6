"""Who may call the API: bearer tokens (hashed, revocable, last use recorded), staff
sessions with CSRF, public probes; `createapitoken`; the admin's revoke action; the docs."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tasks import selectors
from tasks.models import ApiToken

pytestmark = pytest.mark.django_db

# Every endpoint that needs credentials, with a body where it takes one. None of them reaches
# Ray or the database when the request is refused.
PROTECTED = [
    ("get", "/tasks", None),
    ("post", "/tasks", {"type": "echo"}),
    ("get", "/tasks/abcd", None),
    ("get", "/tasks/abcd/status", None),
    ("post", "/tasks/abcd/run", None),
    ("post", "/tasks/abcd/cancel", None),
    ("get", "/organism/status", None),
    ("get", "/organism/summary", None),
    ("post", "/organism/organs/utility_organ_1/execute", {"type": "echo"}),
    ("post", "/organism/execute-random", {"type": "echo"}),
    ("post", "/organism/initialize", None),
    ("post", "/organism/shutdown", None),
]


def send(client: Client, method: str, path: str, body=None, **extra):
    if body is None:
        return getattr(client, method)(path, **extra)
    return getattr(client, method)(path, json.dumps(body), content_type="application/json", **extra)


@pytest.mark.parametrize("method, path, body", PROTECTED)
def test_every_endpoint_but_the_probes_needs_credentials(client, method, path, body):
    response = send(client, method, path, body)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response["WWW-Authenticate"] == "Bearer"
    assert "createapitoken" in response.json()["detail"]
    assert not selectors.count_by_status()["QUEUED"].count


@pytest.mark.parametrize("method, path, body", PROTECTED)
def test_a_wrong_token_is_refused_with_a_reason(client, method, path, body):
    response = send(client, method, path, body, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert "unknown, revoked or expired" in response.json()["detail"]


def test_healthz_is_public(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_valid_token_is_accepted_and_its_use_recorded(api, api_token):
    row = ApiToken.objects.get()
    assert row.last_used_at is None
    assert api.get("/tasks").status_code == 200
    assert api.post("/tasks", {"type": "echo"}, content_type="application/json").status_code == 201
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_tokens_are_stored_hashed(api_token):
    row = ApiToken.objects.get()
    assert row.token_hash == hashlib.sha256(api_token.encode()).hexdigest()
    assert row.prefix == api_token[:8]
    stored = [str(value) for value in ApiToken.objects.values_list(flat=False).get()]
    assert api_token not in stored


def test_a_revoked_token_is_refused(api, api_token):
    from tasks.audit import Actor
    from tasks.auth import revoke_tokens

    assert revoke_tokens(ApiToken.objects.all(), Actor("ops", "cli")) == 1
    response = api.get("/tasks")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_the_token_of_an_inactive_user_is_refused(api, api_user):
    api_user.is_active = False
    api_user.save()
    assert api.get("/tasks").status_code == 401


def test_a_viewers_session_may_read(client, make_user):
    client.force_login(make_user("viewer", "viewer"))
    assert client.get("/tasks").status_code == 200


@pytest.mark.parametrize("is_staff", [False, True])
def test_a_session_without_permissions_is_refused(client, make_user, is_staff):
    client.force_login(make_user("plain", None, is_staff=is_staff))
    response = client.get("/tasks")
    assert response.status_code == 403 and "'viewer' group" in response.json()["detail"]


def test_a_session_needs_csrf_for_unsafe_methods(make_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("operator", "operator"))
    body = json.dumps({"type": "echo"})

    refused = client.post("/tasks", body, content_type="application/json")
    assert refused.status_code == 403
    assert "X-CSRFToken" in refused.json()["detail"]
    assert not selectors.count_by_status()["QUEUED"].count

    client.get("/dashboard/")  # a page with a form (sign out) sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        "/tasks", body, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert accepted.status_code == 201, accepted.content


def test_a_bearer_token_needs_no_csrf(api_token):
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {api_token}"})
    response = client.post("/tasks", {"type": "echo"}, content_type="application/json")
    assert response.status_code == 201


# ---------------------------------------------------------------------------------------------
# createapitoken


def test_createapitoken_prints_a_working_token_once(api_user):
    out, err = io.StringIO(), io.StringIO()
    call_command("createapitoken", "api-user", "--name", "ci", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert len(token) >= 40 and "not shown again" in err.getvalue()
    row = ApiToken.objects.get(name="ci")
    assert row.user == api_user and row.token_hash != token
    client = Client(headers={"Authorization": f"Bearer {token}"})
    assert client.get("/tasks").status_code == 200


def test_createapitoken_for_an_unknown_user_says_what_to_do():
    with pytest.raises(CommandError, match="no user named 'ghost'.*createsuperuser"):
        call_command("createapitoken", "ghost")
    assert not ApiToken.objects.exists()


# ---------------------------------------------------------------------------------------------
# Admin


def test_admin_lists_tokens_and_revokes_them(client, django_user_model, api_token):
    admin_user = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(admin_user)
    row = ApiToken.objects.get()

    listing = client.get("/admin/tasks/apitoken/")
    assert listing.status_code == 200
    assert row.prefix in listing.content.decode()

    response = client.post(
        "/admin/tasks/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 token" in response.content.decode()
    row.refresh_from_db()
    assert row.revoked
    bearer = Client(headers={"Authorization": f"Bearer {api_token}"})
    assert bearer.get("/tasks").status_code == 401


# ---------------------------------------------------------------------------------------------
# OpenAPI


def test_openapi_documents_every_path_and_both_ways_to_authenticate(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    for path in (
        "/tasks",
        "/tasks/{task_id}",
        "/tasks/{task_id}/status",
        "/tasks/{task_id}/run",
        "/tasks/{task_id}/cancel",
        "/coordinator/health",
        "/organism/status",
        "/organism/summary",
        "/organism/organs/{organ_id}/execute",
        "/organism/execute-random",
        "/organism/initialize",
        "/organism/shutdown",
        "/readyz",
        "/healthz",
    ):
        assert path in schema["paths"], path
    assert {"BearerToken", "UserSession"} <= set(schema["components"]["securitySchemes"])
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert schema["paths"]["/tasks"]["post"]["security"]
    assert client.get("/api/docs").status_code == 200
