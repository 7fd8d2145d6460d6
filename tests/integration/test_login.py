"""The logins: the dashboard's (any user; what they may then do is their permission) and the
admin's (staff only, as Django requires). Both are throttled, and a refused `next` lands on the
dashboard, not a 404."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-password-1234"
LOGINS = ["/dashboard/login/", "/admin/login/"]


@pytest.fixture
def operator(make_user):
    # Staff too, so that both logins admit them.
    return make_user("operator", "operator", password=PASSWORD, is_staff=True)


def _log_in(client: Client, password: str, next_url: str = "", login: str = LOGINS[0]):
    query = f"?next={next_url}" if next_url else ""
    return client.post(
        f"{login}{query}",
        {"username": "operator", "password": password, "next": next_url},
        REMOTE_ADDR="203.0.113.7",
    )


@pytest.mark.parametrize("login", LOGINS)
def test_repeated_failed_logins_are_throttled_even_with_the_right_password(
    operator, settings, login
):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _log_in(client, "wrong", login=login).status_code == 200  # the form, an error
    assert _log_in(client, "wrong", login=login).status_code == 429
    assert _log_in(client, PASSWORD, login=login).status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_successful_login_resets_the_count(operator, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _log_in(client, "wrong")
    assert _log_in(client, PASSWORD).status_code == 302
    client.logout()
    assert _log_in(client, "wrong").status_code == 200


@pytest.mark.parametrize("login", LOGINS)
@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x"])
def test_a_refused_next_lands_on_the_dashboard(operator, next_url, login):
    response = _log_in(Client(), PASSWORD, next_url, login=login)
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"


def test_a_viewer_who_is_not_staff_signs_in_to_the_dashboard_but_not_the_admin(make_user):
    make_user("watcher", "viewer", password=PASSWORD)
    client = Client()
    form = client.get("/dashboard/tasks/", follow=True)
    assert form.redirect_chain[-1][0] == "/dashboard/login/?next=/dashboard/tasks/"
    signed_in = client.post(
        "/dashboard/login/?next=/dashboard/tasks/",
        {"username": "watcher", "password": PASSWORD, "next": "/dashboard/tasks/"},
        follow=True,
    )
    assert signed_in.redirect_chain[-1][0] == "/dashboard/tasks/"
    assert signed_in.status_code == 200 and "Sign out" in signed_in.content.decode()
    admin = Client().post("/admin/login/", {"username": "watcher", "password": PASSWORD})
    assert admin.status_code == 200 and "_auth_user_id" not in admin.wsgi_request.session


def test_a_wrong_password_says_so_on_the_dashboard_login(make_user):
    make_user("watcher", "viewer", password=PASSWORD)
    response = Client().post("/dashboard/login/", {"username": "watcher", "password": "nope"})
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()


def test_signing_out_ends_the_session(make_user):
    client = Client()
    client.force_login(make_user("watcher", "viewer"))
    response = client.post("/dashboard/logout/")
    assert response.status_code == 302 and response["Location"] == "/dashboard/login/"
    assert client.get("/dashboard/").status_code == 302
