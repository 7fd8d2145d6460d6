"""Shared fixtures: one Ray cluster per session, wired to the test database.

The suite runs once per database: ``DATABASE_URL`` unset means SQLite, a ``postgres://`` URL
means PostgreSQL (``python dev.py test`` runs both). Tests whose data another process must
see (Ray actors, servers) use ``@pytest.mark.django_db(transaction=True)``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY_NUM_CPUS = 4

# tests/faults start and kill Ray clusters and a PostgreSQL of their own, so they run in a
# pytest process of their own: `SEEDCORE_FAULTS=1 python -m pytest tests/faults` (dev.py does).
collect_ignore = [] if os.environ.get("SEEDCORE_FAULTS") == "1" else ["faults"]

# Fixtures through which a test reaches a database (pytest-django blocks every other way;
# django_db_blocker is left out because its autouse fixtures request it for every test).
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``db_independent`` every test that cannot touch a database, so the PostgreSQL pass
    of ``dev.py test`` (``-m "not db_independent"``) does not run them a second time."""
    for item in items:
        if item.get_closest_marker("django_db") is None and not (
            DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.db_independent)


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL naming the database a connection uses (the test one, once set up)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    return database_url_for(connection.settings_dict)


@pytest.fixture(scope="session")
def ray_cluster(test_database_url):
    """A local Ray cluster for the whole session, in a namespace of its own.

    Actors import Django with the test settings and the test database, like the processes a
    real ``rundispatcher`` starts.
    """
    import ray
    from django.conf import settings

    namespace = f"seedcore-test-{uuid.uuid4().hex[:8]}"
    settings.RAY_NAMESPACE = namespace
    env_vars = {
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": test_database_url,
        "RAY_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    ray.init(
        address="local",  # never join another Ray running on this machine
        num_cpus=RAY_NUM_CPUS,
        namespace=namespace,
        include_dashboard=False,
        runtime_env={"env_vars": env_vars},
        log_to_driver=False,
    )
    try:
        yield {"namespace": namespace, "env_vars": env_vars}
    finally:
        ray.shutdown()
