"""Fixtures for the HTTP API tests: a user with a token, and clients that send it."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.fixture
def api_user(make_user):
    """May do everything (the organism admin group), so its token is limited by its scope."""
    return make_user("api-user", "organism admin", password="secret-password")


@pytest.fixture
def api_token(api_user) -> str:
    from tasks.auth import create_token

    return create_token(api_user, name="tests", scope="admin")[1]


@pytest.fixture
def api(api_token) -> Client:
    """A client that sends a valid bearer token on every request."""
    return Client(headers={"Authorization": f"Bearer {api_token}"})
