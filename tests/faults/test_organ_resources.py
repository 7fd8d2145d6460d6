"""Organs with resources on a simulated cluster (``ray.cluster_utils.Cluster``): a head without
GPUs and a worker node with a GPU and a custom resource.

One cluster for the whole story, to keep the suite short:

- a GPU organ (min_agents 0) grows an agent for its first tasks, placed only on the GPU node,
  and its tasks run there;
- with the GPU node removed, its tasks stay QUEUED with attempts unchanged and say what is
  missing, while ``echo`` tasks keep completing; when a GPU node joins again they run;
- a burst for an organ with min_agents 0 and max_agents 4 grows it to 4 agents and back to 0
  after the cool-down.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from html import escape

import pytest

from organism import status
from tasks import queue, selectors
from tests.faults.conftest import BACKOFF_SECONDS, actor_env, var_dir

COOL_DOWN = "2"
GPU_ORGAN = {
    "id": "gpu_organ_1",
    "kind": "utility",
    "types": ["where"],
    "min_agents": 0,
    "max_agents": 1,
    # num_cpus 0: nothing but GPU agents fits the GPU node, so removing it loses only them.
    "ray": {"num_gpus": 1, "num_cpus": 0, "resources": {"model_x": 1}},
}
ORGANS = [
    {"id": "utility_organ_1", "kind": "utility", "types": ["echo"], "agents": 1},
    GPU_ORGAN,
    {"id": "burst_organ", "kind": "utility", "types": ["sleep"], "min_agents": 0, "max_agents": 4},
]
NEEDS_GPU = (
    "needs 1 GPU; the cluster has 0 of 0 free; "
    "needs 1 of resource 'model_x'; the cluster has 0 of 0 free"
)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (answer := predicate()):
        publication = status.read()
        seen = publication.summary if publication else None
        assert time.monotonic() < deadline, f"timed out waiting for {what}; published: {seen}"
        time.sleep(0.2)
    return answer


def published_organ(organ_id: str) -> dict:
    publication = status.read()
    summary = (publication.summary if publication else None) or {}
    return next((o for o in summary.get("organs", []) if o["organ_id"] == organ_id), {})


def all_done(ids: list[str]) -> bool:
    return all(selectors.get_task(i)["status"] == "COMPLETED" for i in ids)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_organs_place_on_their_resources_hold_without_them_and_scale(
    test_database_url, settings, client, make_user
):
    import ray
    from django.urls import reverse
    from ray.cluster_utils import Cluster

    from organism.ray import actors, driver
    from organism.supervisor import Supervisor, SupervisorOptions

    scratch = var_dir()
    namespace = f"seedcore-resources-{uuid.uuid4().hex[:6]}"
    detection = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    head_args = {"num_cpus": 2, "temp_dir": str(scratch / "ray"), "_system_config": detection}
    gpu_args = {"num_cpus": 0, "num_gpus": 1, "resources": {"model_x": 1}}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    gpu_node = cluster.add_node(**gpu_args)
    cluster.wait_for_nodes()
    env = {**actor_env(test_database_url, namespace), "SEEDCORE_SCALE_DOWN_SECONDS": COOL_DOWN}
    ray.init(
        address=cluster.address,
        namespace=namespace,
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    settings.RAY_NAMESPACE = namespace
    settings.SEEDCORE_BACKOFF_SECONDS = BACKOFF_SECONDS
    actors.get_or_create_coordinator(namespace=namespace, organs=ORGANS)
    supervisor = Supervisor(
        SupervisorOptions(
            dispatchers=1, address=cluster.address, namespace=namespace,
            interval=0.5, heartbeat_timeout=6.0,
        ),
        out=lambda line: None,
    )  # fmt: skip
    stop = threading.Event()
    try:
        supervisor.bootstrap()
        threading.Thread(target=supervisor.supervise, args=(stop,), daemon=True).start()

        # The GPU organ starts empty; its first tasks grow it an agent, on the GPU node.
        first = queue.enqueue_many([{"type": "where"}] * 2)
        wait_for(lambda: all_done(first), 120, "the first GPU tasks")
        for task_id in first:
            assert selectors.get_task(task_id)["result"]["output"] == {"node_id": gpu_node.node_id}
        gpu = published_organ("gpu_organ_1")
        placed_on = {a["node_id"] for a in gpu["agents"] if a["placed"]}
        assert placed_on <= {gpu_node.node_id}, gpu
        assert any(d["to"] == 1 for d in gpu["decisions"]), gpu
        # get_organism_summary carries the same facts, the cluster's nodes included.
        summary = driver.organism_summary(actors.get_coordinator(namespace), 60)
        nodes = {node["node_id"]: node for node in summary["nodes"]}
        assert nodes[gpu_node.node_id]["total"]["GPU"] == 1
        assert {"name": "model_x", "free": 0, "total": 1} in nodes[gpu_node.node_id]["custom"]
        organs = {organ["organ_id"]: organ for organ in summary["organs"]}
        assert organs["gpu_organ_1"]["agents_per_node"] == {gpu_node.node_id: 1}

        # The GPU node goes: GPU tasks stay QUEUED, saying why; echo tasks keep completing.
        cluster.remove_node(gpu_node, allow_graceful=False)
        wait_for(
            lambda: (selectors.queue_control("where")["waiting_for"] or "").startswith(NEEDS_GPU),
            60,
            "the GPU organ's tasks to be held",
        )
        held = queue.enqueue_many([{"type": "where"}] * 3)
        echoes = queue.enqueue_many([{"type": "echo", "params": {"i": i}} for i in range(20)])
        wait_for(lambda: all_done(echoes), 60, "the echo tasks")
        pending = wait_for(
            lambda: published_organ("gpu_organ_1").get("pending_count"), 30, "a pending agent"
        )
        assert pending == 1
        for task_id in held:
            task = selectors.get_task(task_id)
            assert (task["status"], task["attempts"]) == ("QUEUED", 0), task
            assert selectors.waiting_reason(task) == f"{NEEDS_GPU}; 1 agent pending placement"
        client.force_login(make_user("operator", "organism admin"))
        page = client.get(reverse("dashboard:task", args=[held[0]])).content.decode()
        assert escape(f"Waiting: {NEEDS_GPU}; 1 agent pending placement.") in page

        # A GPU node joins: the pending agent is placed there and the held tasks run.
        new_gpu_node = cluster.add_node(**gpu_args)
        wait_for(lambda: all_done(held), 120, "the held GPU tasks after a GPU node joined")
        for task_id in held:
            task = selectors.get_task(task_id)
            assert task["attempts"] == 1
            assert task["result"]["output"] == {"node_id": new_gpu_node.node_id}
        assert selectors.queue_control("where")["waiting_for"] is None

        # A burst grows the burst organ to max_agents, and the cool-down takes it back to 0.
        burst = queue.enqueue_many([{"type": "sleep", "params": {"seconds": 1}}] * 8)
        wait_for(
            lambda: published_organ("burst_organ").get("agent_count") == 4, 60, "4 burst agents"
        )
        wait_for(lambda: all_done(burst), 120, "the burst")
        wait_for(
            lambda: published_organ("burst_organ").get("agent_count") == 0, 60, "0 burst agents"
        )
        moves = [(d["from"], d["to"]) for d in published_organ("burst_organ")["decisions"]]
        assert (0, 4) in moves and moves[0][1] == 0, moves
    finally:
        stop.set()
        try:
            supervisor.stop_dispatchers()
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(scratch, ignore_errors=True)
