"""The admin login (the dashboard's login too): throttled, and a refused `next` lands on the
dashboard, not a 404."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-password-1234"


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)


def _log_in(client: Client, password: str, next_url: str = ""):
    query = f"?next={next_url}" if next_url else ""
    return client.post(
        f"/admin/login/{query}",
        {"username": "operator", "password": password, "next": next_url},
        REMOTE_ADDR="203.0.113.7",
    )


def test_repeated_failed_logins_are_throttled_even_with_the_right_password(operator, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _log_in(client, "wrong").status_code == 200  # the form again, with an error
    assert _log_in(client, "wrong").status_code == 429
    assert _log_in(client, PASSWORD).status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_successful_login_resets_the_count(operator, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _log_in(client, "wrong")
    assert _log_in(client, PASSWORD).status_code == 302
    client.logout()
    assert _log_in(client, "wrong").status_code == 200


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x"])
def test_a_refused_next_lands_on_the_dashboard(operator, next_url):
    response = _log_in(Client(), PASSWORD, next_url)
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
