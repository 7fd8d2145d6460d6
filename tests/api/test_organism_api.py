"""The organism endpoints and the probes: with a real supervisor (Coordinator, dispatchers,
status publication) on the session's Ray, with nothing reporting, and over a live server.

The web side never calls Ray: it reads what the supervisor publishes, and its organism
actions are control tasks that the dispatchers run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import heartbeats, selectors
from tasks.models import Dispatcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def post_json(client, path: str, body=None):
    return client.post(path, json.dumps(body or {}), content_type="application/json")


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return value


# ---------------------------------------------------------------------------------------------
# A real supervisor


@pytest.mark.ray
def test_probes_with_the_supervisor_reporting(client, admin_client, supervised):
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "coordinator": "ok"}

    def both_dispatchers_alive():
        body = admin_client.get("/coordinator/health").json()
        alive = sum(d["alive"] for d in body["dispatchers"])
        return body["status"] == "healthy" and alive == 2 and body

    # The second dispatcher's first heartbeat may come a moment after the first's.
    body = wait_for(both_dispatchers_alive)
    assert body["ping_ms"] > 0 and body["reported_seconds_ago"] < 5

    heartbeats.beat(name="dispatcher-b", node="n1", pid=2, in_flight=0, processed=0)
    Dispatcher.objects.filter(name="dispatcher-b").update(
        last_beat_at=timezone.now() - timedelta(minutes=5)
    )
    body = admin_client.get("/coordinator/health").json()
    assert body["status"] == "degraded" and "1 of 3 dispatchers are silent" in body["message"]
    assert {d["name"]: d["alive"] for d in body["dispatchers"]}["dispatcher-b"] is False


@pytest.mark.ray
def test_organism_control_goes_through_the_queue(api, supervised):
    summary = wait_for(lambda: (r := api.get("/organism/summary")).status_code == 200 and r.json())
    organs = {organ["organ_id"] for organ in summary["organs"]}
    assert "utility_organ_1" in organs and summary["initialized"] is True
    status = api.get("/organism/status")
    assert {organ["organ_id"] for organ in status.json()} == organs

    ran = post_json(
        api, "/organism/organs/utility_organ_1/execute", {"type": "echo", "params": {"x": 1}}
    )
    assert ran.status_code == 200, ran.content
    assert ran.json()["output"] == {"x": 1}
    assert ran.json()["routing"]["organ_id"] == "utility_organ_1"
    # It was a task like any other: in the list, COMPLETED, at the top priority.
    [control] = selectors.list_tasks(selectors.TaskFilter(type="execute_on_organ")).items
    assert control["status"] == "COMPLETED"

    anywhere = post_json(api, "/organism/execute-random", {"type": "echo", "params": {"y": 2}})
    assert anywhere.status_code == 200, anywhere.content
    assert (
        anywhere.json()["output"] == {"y": 2} and anywhere.json()["routing"]["organ_id"] in organs
    )

    unknown = post_json(api, "/organism/organs/no_such_organ/execute", {"type": "echo"})
    assert unknown.status_code == 400
    assert "no organ 'no_such_organ'" in unknown.json()["detail"]

    control = post_json(api, "/organism/execute-random", {"type": "shutdown_organism"})
    assert control.status_code == 400
    assert "cannot run on an organ" in control.json()["detail"]

    failing = post_json(
        api, "/organism/organs/utility_organ_1/execute", {"type": "fail", "params": {}}
    )
    assert failing.status_code == 502
    assert "failed on purpose" in failing.json()["detail"]

    invalid = post_json(api, "/organism/execute-random", {"type": "echo", "extra": 1})
    assert invalid.status_code == 422 and "extra" in invalid.json()["detail"]

    stopped = api.post("/organism/shutdown")
    assert stopped.status_code == 200, stopped.content
    assert stopped.json()["shutdown"] is True and stopped.json()["organs_stopped"] == len(organs)
    started = api.post("/organism/initialize")
    assert started.status_code == 200, started.content


# ---------------------------------------------------------------------------------------------
# Nothing reporting: no rundispatcher on this database


@pytest.mark.django_db(transaction=True)
def test_without_rundispatcher_everything_says_how_to_start_it(client, api, settings):
    settings.RAY_NAMESPACE = f"seedcore-test-absent-{uuid.uuid4().hex[:8]}"
    settings.SEEDCORE_COORDINATOR_TIMEOUT = 0.5

    assert api.get("/organism/status").status_code == 503
    assert "rundispatcher" in api.get("/organism/summary").json()["detail"]

    asked = api.post("/organism/initialize")
    assert asked.status_code == 503
    assert "no dispatcher took the initialize_organism task" in asked.json()["detail"]
    # ...and that control task will never run late: it was cancelled.
    [control] = selectors.list_tasks(selectors.TaskFilter(type="initialize_organism")).items
    assert control["status"] == "CANCELLED"

    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["database"] == "ok" and "rundispatcher" in body["checks"]["coordinator"]

    health = api.get("/coordinator/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy" and health.json()["ping_ms"] is None
    assert client.get("/coordinator/health").json() == {"status": "unhealthy"}


# ---------------------------------------------------------------------------------------------
# A live server with no Ray anywhere


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, *, method: str = "GET", token: str | None = None, body=None):
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data=data, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server_without_ray(test_database_url):
    """``manage.py runserver`` on the test database, with RAY_ADDRESS naming a closed port
    (the web never connects to Ray, so it must not matter)."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": test_database_url,
        "RAY_ADDRESS": f"127.0.0.1:{free_port()}",
        "SEEDCORE_COORDINATOR_TIMEOUT": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if fetch(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {process.stderr.read()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_live_server_without_ray_answers_503_and_still_queues(server_without_ray, api_token):
    url = server_without_ray
    assert fetch(f"{url}/healthz") == (200, {"status": "ok"})

    status, body = fetch(f"{url}/readyz")
    assert status == 503
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    assert "rundispatcher" in body["checks"]["coordinator"]

    status, body = fetch(f"{url}/coordinator/health")
    assert status == 503 and body == {"status": "unhealthy"}
    status, body = fetch(f"{url}/coordinator/health", token=api_token)
    assert status == 503
    assert body["status"] == "unhealthy" and "rundispatcher" in body["message"]

    for method, path in (("GET", "/organism/status"), ("POST", "/organism/initialize")):
        status, body = fetch(f"{url}{path}", method=method, token=api_token)
        assert status == 503, body
        assert "rundispatcher" in body["detail"]

    # The queue does not need Ray: tasks are accepted and wait for a dispatcher.
    status, body = fetch(f"{url}/tasks", method="POST", token=api_token, body={"type": "test"})
    assert status == 201 and body["status"] == "QUEUED"
    status, body = fetch(f"{url}/tasks/{body['id'][:8]}/status", token=api_token)
    assert status == 200 and body["status"] == "QUEUED"
