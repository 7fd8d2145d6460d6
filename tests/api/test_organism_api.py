"""The organism endpoints and the probes: against a real Coordinator on the session's Ray,
with the Coordinator absent, and (over a live server) with Ray out of reach."""

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

from tasks import queue
from tasks.models import Dispatcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One small organism: 1 Coordinator + 2 organs + 2 agents.
API_TEST_ORGANS = [
    {"id": "cognitive_organ_1", "kind": "cognitive", "agents": 1, "types": ["test"]},
    {"id": "utility_organ_1", "kind": "utility", "agents": 1, "types": ["echo", "fail"]},
]


def post_json(client, path: str, body=None):
    return client.post(path, json.dumps(body or {}), content_type="application/json")


# ---------------------------------------------------------------------------------------------
# A real Coordinator


@pytest.fixture(scope="module")
def coordinator(ray_cluster):
    """A Coordinator in a namespace of its own, which the web side's settings then name."""
    import ray
    from django.conf import settings

    from organism import actors

    namespace = f"{ray_cluster['namespace']}-api"
    handle = actors.get_or_create_coordinator(
        namespace=namespace, organs=API_TEST_ORGANS, task_timeout=20.0
    )
    assert ray.get(handle.ping.remote(), timeout=60) == "pong"
    # Starting the organs' and agents' processes can take a while on a busy machine; do it
    # here, so the endpoints' own timeouts measure the calls, not process start-up.
    assert ray.get(handle.initialize.remote(), timeout=180) is True
    saved = settings.RAY_NAMESPACE, settings.SEEDCORE_COORDINATOR_TIMEOUT
    settings.RAY_NAMESPACE, settings.SEEDCORE_COORDINATOR_TIMEOUT = namespace, 120.0
    try:
        yield handle
    finally:
        settings.RAY_NAMESPACE, settings.SEEDCORE_COORDINATOR_TIMEOUT = saved
        try:
            cleanup = {"id": "cleanup", "type": "shutdown_organism"}
            ray.get(handle.handle.remote(cleanup), timeout=60)
        finally:
            ray.kill(handle)


@pytest.mark.ray
@pytest.mark.django_db
def test_probes_with_the_coordinator_up(client, coordinator):
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {
        "database": "ok",
        "migrations": "ok",
        "ray": "ok",
        "coordinator": "ok",
    }

    # No dispatcher has beaten: the Coordinator answers, but nothing takes tasks.
    health = client.get("/coordinator/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded" and body["ping_ms"] > 0
    assert body["dispatchers"] == [] and "rundispatcher" in body["message"]

    queue.beat(name="dispatcher-a", node="n1", pid=1, in_flight=2, processed=10)
    body = client.get("/coordinator/health").json()
    assert body["status"] == "healthy"
    [dispatcher] = body["dispatchers"]
    assert dispatcher["name"] == "dispatcher-a" and dispatcher["alive"] is True
    assert dispatcher["in_flight"] == 2 and dispatcher["processed"] == 10
    assert dispatcher["last_beat_at"]

    queue.beat(name="dispatcher-b", node="n1", pid=2, in_flight=0, processed=0)
    Dispatcher.objects.filter(name="dispatcher-b").update(
        last_beat_at=timezone.now() - timedelta(minutes=5)
    )
    body = client.get("/coordinator/health").json()
    assert body["status"] == "degraded" and "1 of 2 dispatchers are silent" in body["message"]
    alive = {d["name"]: d["alive"] for d in body["dispatchers"]}
    assert alive == {"dispatcher-a": True, "dispatcher-b": False}


@pytest.mark.ray
@pytest.mark.django_db
def test_organism_control_through_the_coordinator(api, coordinator):
    initialized = api.post("/organism/initialize")
    assert initialized.status_code == 200, initialized.content
    assert initialized.json()["initialized"] is True
    assert initialized.json()["organ_count"] == 2

    status = api.get("/organism/status")
    assert status.status_code == 200
    assert {organ["organ_id"] for organ in status.json()} == {
        "cognitive_organ_1",
        "utility_organ_1",
    }

    summary = api.get("/organism/summary").json()
    assert summary["organ_count"] == 2 and summary["total_agent_count"] == 2

    ran = post_json(
        api, "/organism/organs/utility_organ_1/execute", {"type": "echo", "params": {"x": 1}}
    )
    assert ran.status_code == 200, ran.content
    assert ran.json()["output"] == {"x": 1}
    assert ran.json()["routing"]["organ_id"] == "utility_organ_1"

    anywhere = post_json(api, "/organism/execute-random", {"type": "echo", "params": {"y": 2}})
    assert anywhere.status_code == 200, anywhere.content
    assert anywhere.json()["output"] == {"y": 2}
    assert anywhere.json()["routing"]["organ_id"] in {"cognitive_organ_1", "utility_organ_1"}

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
    assert stopped.json()["shutdown"] is True and stopped.json()["organs_stopped"] == 2


@pytest.mark.ray
@pytest.mark.django_db
def test_a_missing_coordinator_is_503_saying_how_to_start_it(client, api, ray_cluster, settings):
    settings.RAY_NAMESPACE = f"seedcore-test-absent-{uuid.uuid4().hex[:8]}"

    for response in (api.get("/organism/status"), api.post("/organism/initialize")):
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "rundispatcher" in detail and settings.RAY_NAMESPACE in detail

    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["ray"] == "ok" and body["checks"]["database"] == "ok"
    assert "rundispatcher" in body["checks"]["coordinator"]
    assert "coordinator" in body["detail"]

    health = client.get("/coordinator/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy" and health.json()["ping_ms"] is None


# ---------------------------------------------------------------------------------------------
# A live server whose Ray is out of reach


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
    """``manage.py runserver`` on the test database with RAY_ADDRESS naming a closed port."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": test_database_url,
        "RAY_ADDRESS": f"127.0.0.1:{free_port()}",
        "SEEDCORE_RAY_CONNECT_TIMEOUT": "1",
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
    assert "rundispatcher" in body["checks"]["ray"]
    assert body["checks"]["coordinator"] == "not checked"

    status, body = fetch(f"{url}/coordinator/health")
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
