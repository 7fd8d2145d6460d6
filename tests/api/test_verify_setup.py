"""The design's "Verify Setup", end to end: a real `runserver` and a real `rundispatcher` on
the session's Ray. Submit `test`, watch it go QUEUED → COMPLETED, check the Coordinator's
health and the organism's status, all over HTTP with a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.api.test_organism_api import ROOT, fetch, free_port

VERIFY_ORGANS = [
    {"id": "cognitive_organ_1", "kind": "cognitive", "agents": 1, "types": ["test"]},
    {"id": "utility_organ_1", "kind": "utility", "agents": 1, "types": ["echo"]},
]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as exc:  # the server is not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last answer: {last!r}")


def stop(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def running_site(ray_cluster, test_database_url, tmp_path):
    """`rundispatcher` and `runserver` as subprocesses, sharing the test database and Ray."""
    import ray

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": test_database_url,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RAY_NAMESPACE": f"{ray_cluster['namespace']}-verify",
        "SEEDCORE_ORGANS": json.dumps(VERIFY_ORGANS),
        "SEEDCORE_DISPATCHERS": "1",
    }
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("dispatcher", "server")}
    with open(logs["dispatcher"], "w") as dispatcher_log, open(logs["server"], "w") as server_log:
        dispatcher = subprocess.Popen(
            [sys.executable, "manage.py", "rundispatcher"],
            cwd=ROOT,
            env=env,
            stdout=dispatcher_log,
            stderr=subprocess.STDOUT,
        )
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(server, signal.SIGTERM)
            stop(dispatcher, signal.SIGINT)  # a graceful stop removes its actors
            for name, path in logs.items():
                print(f"--- {name} log (tail) ---\n{path.read_text()[-3000:]}")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_verify_setup_against_a_running_server_and_dispatcher(running_site, api_token):
    url = running_site

    # The probes come up once the dispatcher has started the Coordinator.
    wait_for(lambda: fetch(f"{url}/readyz")[0] == 200, timeout=240, what="/readyz 200")
    health = wait_for(
        lambda: (
            (body := fetch(f"{url}/coordinator/health", token=api_token)[1])["status"] == "healthy"
            and body
        ),
        timeout=60,
        what="a healthy Coordinator with a live dispatcher",
    )
    assert health["ping_ms"] > 0 and any(d["alive"] for d in health["dispatchers"])

    status, organs = fetch(f"{url}/organism/status", token=api_token)
    assert status == 200, organs
    assert {organ["organ_id"] for organ in organs} == {"cognitive_organ_1", "utility_organ_1"}

    status, task = fetch(
        f"{url}/tasks",
        method="POST",
        token=api_token,
        body={"type": "test", "description": "Test task"},
    )
    assert status == 201 and task["status"] == "QUEUED"
    seen = ["QUEUED"]

    def finished():
        body = fetch(f"{url}/tasks/{task['id'][:8]}/status", token=api_token)[1]
        if body["status"] != seen[-1]:
            seen.append(body["status"])
        return body["status"] in ("COMPLETED", "FAILED") and body

    final = wait_for(finished, timeout=60, what="the test task to finish", interval=0.05)
    assert final["status"] == "COMPLETED", final
    assert seen[0] == "QUEUED" and seen[-1] == "COMPLETED"
    assert set(seen) <= {"QUEUED", "RUNNING", "COMPLETED"}

    status, done = fetch(f"{url}/tasks/{task['id']}", token=api_token)
    assert done["result"]["output"]["message"] == "SeedCore smoke test completed"
    assert done["result"]["routing"]["organ_id"] == "cognitive_organ_1"
    assert done["attempts"] == 1

    # A type no handler knows is accepted, then fails with the registry's message.
    status, orphan = fetch(
        f"{url}/tasks", method="POST", token=api_token, body={"type": "no_such_type_anywhere"}
    )
    assert status == 201
    failed = wait_for(
        lambda: (
            (b := fetch(f"{url}/tasks/{orphan['id']}", token=api_token)[1])["status"] in ("FAILED",)
            and b
        ),
        timeout=60,
        what="the unknown type to fail",
    )
    assert "no_such_type_anywhere" in failed["error"]
