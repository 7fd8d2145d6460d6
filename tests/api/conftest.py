"""Fixtures for the HTTP API tests: a user with a token, and clients that send it."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.fixture
def api_user(django_user_model):
    return django_user_model.objects.create_user(
        "api-user", password="secret-password", is_staff=True
    )


@pytest.fixture
def api_token(api_user) -> str:
    from tasks.auth import create_token

    return create_token(api_user, name="tests", scope="admin")[1]


@pytest.fixture
def api(api_token) -> Client:
    """A client that sends a valid bearer token on every request."""
    return Client(headers={"Authorization": f"Bearer {api_token}"})
