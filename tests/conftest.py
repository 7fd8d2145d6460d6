"""Shared fixtures: one Ray cluster per session, wired to the test database.

The suite runs once, on the PostgreSQL that ``DATABASE_URL`` names (``python dev.py test`` sets
it: ``SEEDCORE_TEST_POSTGRES_URL``, else a throwaway embedded server). Tests whose data another
process must see (Ray actors, servers) use ``@pytest.mark.django_db(transaction=True)``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from seedcore_site.database import database_url

ROOT = Path(__file__).resolve().parent.parent
RAY_NUM_CPUS = 4

# tests/faults start and kill Ray clusters and a PostgreSQL of their own, so they run in a
# pytest process of their own: `SEEDCORE_FAULTS=1 python -m pytest tests/faults` (dev.py does).
collect_ignore = [] if os.environ.get("SEEDCORE_FAULTS") == "1" else ["faults"]


@pytest.fixture(autouse=True)
def bulk_actions_inline(monkeypatch):
    """Bulk actions (tasks.bulk) run to the end inside the call that starts them: a test's
    uncommitted data is invisible to a thread's own connection. Tests of the thread turn it
    back on; servers the browser tests start run them in threads as in production."""
    from tasks import bulk

    monkeypatch.setattr(bulk, "run_in_background", False)


@pytest.fixture
def registry():
    """Undo the handler registrations a test makes."""
    from organism import handlers

    saved = dict(handlers._registry)
    yield handlers._registry
    handlers._registry.clear()
    handlers._registry.update(saved)


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    return database_url(connection.settings_dict)


@pytest.fixture(scope="session")
def ray_cluster(test_database_url):
    """A local Ray cluster for the whole session, in a namespace of its own.

    Actors import Django with the test settings and the test database, like the processes a
    real ``rundispatcher`` starts.
    """
    import ray
    from django.conf import settings

    from organism.ray.connect import node_environment

    namespace = f"seedcore-test-{uuid.uuid4().hex[:8]}"
    settings.RAY_NAMESPACE = namespace
    env_vars = {
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "RAY_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # As in production, the database comes from the Ray node's environment, not runtime_env
    # (organism.ray.connect.actor_env_vars): the node started here inherits the test database.
    with node_environment({"DATABASE_URL": test_database_url}):
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


# Quick rounds and retries, so a test sees the supervisor and the reaper act within seconds.
SUPERVISED_BACKOFF = 0.5


@pytest.fixture
def supervised(ray_cluster, transactional_db, settings):
    """What ``rundispatcher`` runs: a real Supervisor (Coordinator, 2 dispatcher actors,
    reaper, status publication) ticking every 0.5 s in a background thread of the test
    process; stopped, with its dispatchers, before the test database is flushed."""
    settings.SEEDCORE_BACKOFF_SECONDS = SUPERVISED_BACKOFF  # the reaper's policy
    with supervisor_running(ray_cluster["namespace"]) as boss:
        yield boss


@contextlib.contextmanager
def supervisor_running(namespace: str, *, dispatchers: int = 2, **config: Any):
    """A Supervisor as in :func:`supervised`, for tests that start it themselves or tune
    it: ``config`` overrides fields of its dispatchers' DispatcherConfig."""
    import threading

    from django.db import connections

    from organism.dispatcher import DispatcherConfig
    from organism.supervisor import Supervisor, SupervisorOptions

    config = DispatcherConfig(
        **{
            "claim_batch": 20,
            "max_in_flight": 100,
            "lease_seconds": 3.0,
            "heartbeat_seconds": 0.5,
            "poll_seconds": 0.2,
            "grace_seconds": 2.0,
            "max_attempts": 3,
            "backoff_seconds": SUPERVISED_BACKOFF,
            "backoff_max_steps": 10,
            **config,
        }
    )
    options = SupervisorOptions(
        dispatchers=dispatchers,
        address="",
        namespace=namespace,
        interval=0.5,
        heartbeat_timeout=3.0,
        config=config,
    )
    boss = Supervisor(options, out=lambda line: None)
    boss.bootstrap()
    stop = threading.Event()

    def supervise():
        try:
            boss.supervise(stop)
        finally:
            connections.close_all()

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    try:
        yield boss
    finally:
        stop.set()
        thread.join(timeout=30)
        boss.stop_dispatchers()


# ---------------------------------------------------------------------------------------------
# Users by role (tasks.permissions): the groups the migration makes, or no group at all.

VIEWER, OPERATOR, ORGANISM_ADMIN = "viewer", "operator", "organism admin"
ROLES = (VIEWER, OPERATOR, ORGANISM_ADMIN)


def role_group(name: str):
    """The group ``name`` as migration tasks.0008 made it. A transactional test's flush deletes
    groups (the permissions themselves come back), so it is made again from tasks.permissions,
    the same sets tests/integration/test_permissions.py checks the migration against."""
    from django.contrib.auth.models import Group, Permission

    from tasks import permissions

    group, created = Group.objects.get_or_create(name=name)
    if created:
        scope = {group: scope for scope, group in permissions.SCOPE_GROUPS.items()}[name]
        for dotted in permissions.group_permissions(scope):
            app_label, codename = dotted.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
    return group


@pytest.fixture
def make_user(django_user_model):
    """``make_user(username, role)``: an active user in the group ``role`` (None: no group).
    Not staff unless asked, since a SeedCore role needs no staff status."""

    def make(username: str, role: str | None, *, password: str = "pw", **fields: Any):
        user = django_user_model.objects.create_user(username, password=password, **fields)
        if role is not None:
            user.groups.add(role_group(role))
        return user

    return make
