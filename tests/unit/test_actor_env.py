"""What SeedCore's actors are given through Ray's runtime_env, which Ray's dashboard and state
API show to anyone who can read them: settings, never secrets (issue #15, finding 6)."""

from __future__ import annotations

import os

import pytest
import ray

from organism.ray import connect

PASSWORD = "hunter2-db-password"
SECRET_KEY = "k" * 60


@pytest.fixture
def secrets_in_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgres://seedcore:{PASSWORD}@db:5432/seedcore")
    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("SEEDCORE_TEST_POSTGRES_URL", f"postgres://u:{PASSWORD}@db/t")
    monkeypatch.setenv("SEEDCORE_LEASE_SECONDS", "45")


def test_the_runtime_env_carries_settings_and_no_secret(secrets_in_environment, settings):
    settings.DATABASES["default"]["PASSWORD"] = PASSWORD
    env = connect.actor_env_vars()
    # Before the fix it held DATABASE_URL, with the password, and SECRET_KEY.
    assert "DATABASE_URL" not in env and "SECRET_KEY" not in env
    assert not [name for name, value in env.items() if PASSWORD in value or SECRET_KEY in value]
    assert env["SEEDCORE_LEASE_SECONDS"] == "45"
    assert {"DJANGO_SETTINGS_MODULE", "RAY_NAMESPACE", "DEBUG", "PYTHONPATH"} <= set(env)


def test_a_local_ray_inherits_the_database_from_the_process_that_starts_it(monkeypatch):
    """Workers of a local Ray are children of its raylet, which copies the environment of the
    process that runs ray.init: the database URL is put there for that call, not in runtime_env."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    seen = {}

    def init(**kwargs):
        seen["environ"] = os.environ.get("DATABASE_URL")
        seen["runtime_env"] = kwargs["runtime_env"]["env_vars"]

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(connect.settings, "RAY_ADDRESS", "", raising=False)
    connect.ensure_connected(start_local=True)
    assert seen["environ"] == connect.local_node_env()["DATABASE_URL"]
    assert "DATABASE_URL" not in seen["runtime_env"]
    assert "DATABASE_URL" not in os.environ  # restored once the node has started
