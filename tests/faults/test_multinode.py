"""Organs and agents spread over Ray nodes, and losing a node loses no task.

A simulated cluster on one machine (``ray.cluster_utils.Cluster``): a head and two worker
nodes. Tasks of the ``record`` type run while a worker node carrying agents is removed; each
task must still end COMPLETED, its result matching exactly one recorded execution, and the
attempts the node took with it are recorded as system failures on that node.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid

import pytest

from tasks import queue, selectors
from tests.faults.conftest import BACKOFF_SECONDS, actor_env, var_dir
from tests.faults.recording import audit

TASKS = 300


def task_seconds(index: int) -> float:
    """0.5 to 2 s, so tasks are still running on every node when one is removed."""
    return 0.5 + (index % 4) * 0.5


def organism_nodes(namespace: str) -> dict[str, str]:
    """Name → node id of every live organ and agent actor in ``namespace``."""
    import ray
    from ray.util import list_named_actors

    table = ray._private.state.actors()  # the GCS actor table; needs no dashboard
    placed = {}
    for entry in list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] != namespace or "organ" not in name:
            continue
        try:
            actor_id = ray.get_actor(name, namespace=namespace)._actor_id.hex()
        except ValueError:  # died since listed
            continue
        info = table.get(actor_id) or {}
        if info.get("State") == "ALIVE":
            placed[name] = info["Address"]["NodeID"]
    return placed


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_organism_spreads_over_nodes_and_survives_losing_one(test_database_url, settings):
    import ray
    from ray.cluster_utils import Cluster

    from organism.supervisor import Supervisor, SupervisorOptions

    scratch = var_dir()
    namespace = f"seedcore-multinode-{uuid.uuid4().hex[:6]}"
    node_args = {"num_cpus": 1, "temp_dir": str(scratch / "ray")}
    # A lost node is declared dead after 3 missed 1 s health checks (Ray's default waits ~30 s).
    detection = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    head_args = {**node_args, "num_cpus": 2, "_system_config": detection}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    workers = [cluster.add_node(**node_args) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        namespace=namespace,
        runtime_env={"env_vars": actor_env(test_database_url, namespace)},
        log_to_driver=False,
    )
    settings.RAY_NAMESPACE = namespace
    # The supervisor runs in this process and reaps the lost node's tasks to RETRY: with the
    # quick backoff the actors have (actor_env), not the default 30 s a step.
    settings.SEEDCORE_BACKOFF_SECONDS = BACKOFF_SECONDS
    supervisor = Supervisor(
        SupervisorOptions(
            dispatchers=2, address=cluster.address, namespace=namespace,
            interval=1.0, heartbeat_timeout=6.0,
        ),
        out=lambda line: None,
    )  # fmt: skip
    stop = threading.Event()
    try:
        supervisor.bootstrap()
        placed = organism_nodes(namespace)
        assert len(set(placed.values())) >= 2, placed  # spread, not packed on one node
        agents_on = {node.node_id: 0 for node in workers}
        for name, node_id in placed.items():
            if "_agent_" in name and node_id in agents_on:
                agents_on[node_id] += 1
        assert any(agents_on.values()), placed  # agents run on the worker nodes too
        victim = max(workers, key=lambda node: agents_on[node.node_id])
        victims = sorted(name for name, node in placed.items() if node == victim.node_id)

        threading.Thread(target=supervisor.supervise, args=(stop,), daemon=True).start()
        log = scratch / "executions.log"
        ids = queue.enqueue_many(
            [
                {"type": "record", "params": {"log": str(log), "seconds": task_seconds(i)}}
                for i in range(TASKS)
            ]
        )

        def completed() -> int:
            return selectors.count_by_status()["COMPLETED"].count

        wait_for(lambda: completed() >= TASKS // 4, 180, "a quarter of the tasks")
        running_at_removal = selectors.count_by_status()["RUNNING"].count
        started = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        wait_for(lambda: completed() >= TASKS, 300, "every task to complete")
        recovery = time.monotonic() - started

        result = audit([selectors.get_task(task_id) for task_id in ids], log)
        print(
            f"\nmulti-node: {TASKS} tasks of 0.5-2 s; removed the node carrying {victims} "
            f"with {running_at_removal} tasks running; {result.executions} executions, "
            f"{result.re_executed} re-executed, {result.retried} needed a second attempt, "
            f"all done {recovery:.1f} s after the removal"
        )
        assert result.by_status == {"COMPLETED": TASKS}
        assert result.lost == [] and result.completed_twice == []
        assert running_at_removal > 0
        assert result.retried > 0  # the lost node really took running tasks with it
        # What the node took with it were system failures (retried at once, outside the
        # attempts budget), each run naming the node it was lost on.
        finished = [selectors.get_task(task_id) for task_id in ids]
        lost = [run for task in finished for run in task["runs"] if run["outcome"] == "system"]
        assert lost, "no attempt was recorded as lost to the system"
        assert {run["node_id"] for run in lost} == {victim.node_id}
        assert all(task["attempts"] - task["system_failures"] >= 1 for task in finished)

        # Once Ray has declared the node dead, the next tasks find its agents dead and the
        # manager replaces them on the nodes left.
        wait_for(
            lambda: victim.node_id not in organism_nodes(namespace).values(), 120, "node death"
        )
        more = queue.enqueue_many([{"type": "record", "params": {"log": str(log)}}] * 30)
        wait_for(lambda: completed() >= TASKS + len(more), 180, "the follow-up tasks")
        after = organism_nodes(namespace)
        assert set(after) >= set(placed), sorted(set(placed) - set(after))  # all replaced
        assert victim.node_id not in after.values()
        assert audit([selectors.get_task(task_id) for task_id in more], log).problems() == []
    finally:
        stop.set()
        try:
            supervisor.stop_dispatchers()
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(scratch, ignore_errors=True)
