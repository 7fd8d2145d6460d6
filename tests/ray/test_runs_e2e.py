"""Attempts traced into Ray, on the session's local Ray with a real Supervisor: each run names
the agent that ran it (node, pid, actor) and holds what its handler logged, and an agent
killed under its task is a system failure, retried at once on another agent."""

from __future__ import annotations

import pytest
from django.test import Client

from tasks import queue
from tasks.auth import create_token
from tests.conftest import supervisor_running
from tests.ray.test_dispatch_e2e import finished, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

# Longer than any wait below: a retry that waited for its backoff would never be seen.
LONG_BACKOFF = 600.0


@pytest.fixture
def slow_backoff(ray_cluster, transactional_db, settings):
    """A Supervisor whose ordinary retries wait LONG_BACKOFF seconds."""
    settings.SEEDCORE_BACKOFF_SECONDS = LONG_BACKOFF  # the reaper's policy
    with supervisor_running(ray_cluster["namespace"], backoff_seconds=LONG_BACKOFF) as boss:
        yield boss


def agents(namespace: str) -> dict[str, dict]:
    """Every live agent actor: name → its handle, actor id and state (which holds where it
    runs, as the agent read it at start)."""
    import ray
    from ray.util import list_named_actors

    found = {}
    for entry in list_named_actors(all_namespaces=True):
        if entry["namespace"] != namespace or "_agent_" not in entry["name"]:
            continue
        handle = ray.get_actor(entry["name"], namespace=namespace)
        found[entry["name"]] = {
            "handle": handle,
            "actor_id": handle._actor_id.hex(),
            "state": ray.get(handle.state.remote(), timeout=30),
        }
    return found


def api_client(make_user) -> Client:
    token = create_token(make_user("tracer", "viewer"), name="trace")[1]
    return Client(headers={"Authorization": f"Bearer {token}"})


def test_a_run_names_its_real_agent_and_holds_what_the_handler_logged(
    slow_backoff, ray_cluster, make_user
):
    import ray

    task_id = queue.enqueue(type="chatty", params={"say": "bonjour"})["id"]
    wait_for(lambda: finished(task_id))
    body = api_client(make_user).get(f"/tasks/{task_id}").json()
    assert body["status"] == "COMPLETED", body
    [run] = body["runs"]
    agent = next(
        a for a in agents(ray_cluster["namespace"]).values() if a["actor_id"] == run["actor_id"]
    )
    node_id, node_ip, pid, actor_id, organ_id = agent["state"]["placement"]
    assert (run["node_id"], run["node_ip"], run["pid"], run["actor_id"], run["organ_id"]) == (
        node_id,
        node_ip,
        pid,
        agent["actor_id"],
        organ_id,
    )
    assert run["node_id"] in {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert run["organ_id"] == body["result"]["routing"]["organ_id"]
    assert (run["attempt"], run["outcome"]) == (1, "completed")
    assert run["started_at"] <= run["finished_at"]
    log = run["log"]
    assert "INFO tests.taskapp.chatty: logged: bonjour (attempt 1)\n" in log
    assert "printed: bonjour\n" in log and "to stderr: bonjour\n" in log


def test_an_agent_killed_under_its_task_is_a_system_failure_retried_at_once_elsewhere(
    slow_backoff, ray_cluster
):
    import ray

    namespace = ray_cluster["namespace"]
    # One attempt allowed: had the lost attempt counted, the task could not run again.
    task_id = queue.enqueue(type="sleep", params={"seconds": 2}, max_attempts=1)["id"]
    wait_for(lambda: finished(task_id, ("RUNNING",)))

    def running_agent():
        busy = [a for a in agents(namespace).values() if a["state"]["load"]]
        return busy[0] if busy else None

    victim = wait_for(running_agent)
    ray.kill(victim["handle"])
    task = wait_for(lambda: finished(task_id), timeout=60)
    assert task["status"] == "COMPLETED", task["error"]
    # The lost attempt was given back: 2 claims, 1 lost to the system, 1 of 1 used.
    assert (task["attempts"], task["system_failures"]) == (2, 1)
    lost, done = task["runs"]
    assert (lost["attempt"], lost["outcome"]) == (1, "system")
    assert lost["actor_id"] == victim["actor_id"]
    assert lost["pid"] == victim["state"]["placement"][2]
    assert lost["log"].startswith("[lost: actor_died]")
    assert (done["attempt"], done["outcome"]) == (2, "completed")
    assert done["actor_id"] != victim["actor_id"]  # another agent (a new actor) ran it
    [entry] = task["error_history"]
    assert (entry["system"], entry["outcome"]) == ("actor_died", "RETRY")
    assert task["error"] is None
    # Retried at once: the second attempt was due when the first was lost (no backoff).
    assert task["run_after"] <= task["updated_at"]
