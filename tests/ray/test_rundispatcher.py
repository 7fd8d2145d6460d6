"""``manage.py rundispatcher`` driven as a subprocess against the test database.

The Ray tests attach the command to the session's local Ray (``--address``), in its
namespace, the way a Kubernetes Job attaches to a Ray cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest

from tasks import queue, selectors
from tests.conftest import ROOT


def command_env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": database_url,
        "SEEDCORE_BACKOFF_SECONDS": "0.5",
    }


def rundispatcher(*args: str, database_url: str, timeout: float = 240):
    return subprocess.run(
        [sys.executable, "manage.py", "rundispatcher", *args],
        cwd=ROOT,
        env=command_env(database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cluster_args(ray_cluster) -> list[str]:
    import ray

    return [
        "--address",
        ray.get_runtime_context().gcs_address,
        "--namespace",
        ray_cluster["namespace"],
    ]


def wait_completed(task_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (task := selectors.get_task(task_id))["status"] != "COMPLETED":
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    return task


def actor_ids(namespace: str) -> dict[str, str]:
    import ray

    names = [f"seedcore_dispatcher_{i}" for i in range(2)] + ["seedcore_coordinator"]
    return {name: ray.get_actor(name, namespace=namespace)._actor_id.hex() for name in names}


def gone(name: str, namespace: str, timeout: float = 30) -> bool:
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.ray
@pytest.mark.django_db(transaction=True)
def test_foreground_supervises_until_sigterm_then_stops_gracefully(ray_cluster, test_database_url):
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "rundispatcher",
            "--dispatchers",
            "1",
            *cluster_args(ray_cluster),
        ],
        cwd=ROOT,
        env=command_env(test_database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("supervising"):
                break
        assert any("dispatchers 1/1" in line for line in lines), lines
        task_id = queue.enqueue(type="echo", params={"via": "rundispatcher"})["id"]
        assert wait_completed(task_id)["result"]["output"] == {"via": "rundispatcher"}
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    assert "stopped; 0 task(s) released back to the queue" in rest, rest
    assert "Traceback" not in "".join(lines) + rest
    assert gone("seedcore_dispatcher_0", ray_cluster["namespace"])


@pytest.mark.ray
@pytest.mark.django_db(transaction=True)
def test_detach_leaves_actors_running_a_second_run_reuses_them_and_stop_ends_them(
    ray_cluster, test_database_url
):
    namespace = ray_cluster["namespace"]
    first = rundispatcher("--detach", *cluster_args(ray_cluster), database_url=test_database_url)
    assert first.returncode == 0, first.stderr
    assert "detached: Coordinator and 2 dispatcher(s)" in first.stdout
    before = actor_ids(namespace)

    task_id = queue.enqueue(type="echo", params={"detached": True})["id"]
    assert wait_completed(task_id)["result"]["output"] == {"detached": True}

    second = rundispatcher("--detach", *cluster_args(ray_cluster), database_url=test_database_url)
    assert second.returncode == 0, second.stderr
    assert actor_ids(namespace) == before  # reused, not duplicated

    stop = rundispatcher("--stop", *cluster_args(ray_cluster), database_url=test_database_url)
    assert stop.returncode == 0, stop.stderr
    assert "stopped 2 dispatcher(s)" in stop.stdout
    assert "stopped the Coordinator" in stop.stdout
    for name in before:
        assert gone(name, namespace), name


def test_an_unreachable_database_is_a_clear_error():
    url = f"postgres://postgres@127.0.0.1:5432/seedcore_missing_{uuid.uuid4().hex[:6]}"
    result = rundispatcher("--detach", database_url=url, timeout=60)
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def empty_database_url(test_database_url):
    """A fresh database on the test database's server, with no tables at all."""
    name = f"seedcore_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(test_database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(test_database_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(test_database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.django_db  # the test database names the server the empty one is made on
def test_a_database_without_migrations_is_a_clear_error(empty_database_url):
    result = rundispatcher("--detach", database_url=empty_database_url, timeout=60)
    assert result.returncode == 1
    assert "run `python manage.py migrate`" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_ray_is_a_clear_error(test_database_url):
    result = rundispatcher(
        "--detach", "--address", "127.0.0.1:1", database_url=test_database_url, timeout=60
    )
    assert result.returncode == 1
    assert "cannot reach Ray at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
