"""The messages between dispatchers, the Coordinator and agents, and the Ray edge's border."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from organism.messages import (
    ActorUnavailable,
    Outcome,
    OutcomeStatus,
    Placement,
    Routing,
    Run,
    TaskPayload,
    pack_outcomes,
    pack_tasks,
    unpack_outcomes,
    unpack_tasks,
)
from tests.conftest import ROOT

PLAIN_MODULES = (
    "organism.agent",
    "organism.coordinator",
    "organism.dispatcher",
    "organism.manager",
    "organism.messages",
    "organism.organ",
    "organism.routing",
    "organism.supervisor",
)


def test_plain_modules_do_not_import_ray():
    """Only organism.ray imports Ray: the plain classes are tested, and read, without it."""
    code = (
        "import sys, django\n"
        "django.setup()\n"
        f"for name in {PLAIN_MODULES!r}: __import__(name)\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_claimed_row_becomes_a_payload():
    row = {
        "id": "t1",
        "type": "echo",
        "attempts": 3,
        "params": None,
        "drift_score": None,
        "domain": "io",
        "description": "not sent",
    }
    assert TaskPayload.from_claim(row) == TaskPayload("t1", "echo", 3, {}, 0.0, "io")


def test_messages_cross_the_wire_unchanged():
    tasks = [TaskPayload("t1", "echo", 1, {"a": [1, 2]}), TaskPayload("t2", "x", 2, {}, 0.7, "io")]
    assert unpack_tasks(pickle.loads(pickle.dumps(pack_tasks(tasks)))) == tasks
    outcomes = [
        Outcome.success(tasks[0], {"a": [1, 2]}, Routing("fast", "o", "o_agent_0", 1.5)),
        Outcome.failure(
            tasks[1], OutcomeStatus.PERMANENT, "PermanentError: no", traceback="tb", max_attempts=3
        ),
    ]
    assert unpack_outcomes(pickle.loads(pickle.dumps(pack_outcomes(outcomes)))) == outcomes


def test_an_outcome_says_what_the_queue_writes():
    task = TaskPayload("t1", "echo", 2, {})
    done = Outcome.success(task, {"x": 1}, Routing("escalated", "cog", "cog_agent_1", 2.0))
    assert (done.task_id, done.attempt, done.ok) == ("t1", 2, True)
    assert done.result == {
        "output": {"x": 1},
        "routing": {
            "path": "escalated",
            "organ_id": "cog",
            "agent_id": "cog_agent_1",
            "duration_ms": 2.0,
        },
    }
    cancelled = Outcome.failure(task, OutcomeStatus.CANCELLED, "cancelled")
    assert (cancelled.ok, cancelled.cancelled, cancelled.permanent, cancelled.result) == (
        False,
        True,
        False,
        None,
    )
    assert Outcome.failure(task, OutcomeStatus.PERMANENT, "bad").permanent is True


PLACEMENT = Placement("ab" * 28, "10.0.0.7", 4242, "cd" * 16, "utility_organ_1")


def test_runs_and_system_kinds_cross_the_wire_unchanged():
    tasks = [TaskPayload(f"t{i}", "echo", 1, {}) for i in range(3)]
    outcomes = [
        Outcome.success(
            tasks[0], 1, Routing("fast", "o", "a", 1.0), Run(PLACEMENT, 10.0, 11.5, "hello\n")
        ),
        Outcome.failure(tasks[1], OutcomeStatus.ERROR, "boom", run=Run(PLACEMENT, 10.0, 12.0)),
        Outcome.failure(
            tasks[2],
            OutcomeStatus.SYSTEM,
            "lost",
            run=Run(PLACEMENT, 10.0, 13.0, "[lost: node_died] …"),
            kind="node_died",
        ),
    ]
    back = unpack_outcomes(pickle.loads(pickle.dumps(pack_outcomes(outcomes))))
    assert back == outcomes
    assert back[2].system is True and back[2].kind == "node_died"


def test_an_agents_placement_travels_once_per_message():
    """Its outcomes share one Placement object: pickle sends it once, and each outcome adds
    only its times (and a log, when its handler logged something)."""
    outcomes = [
        Outcome.success(
            TaskPayload(f"t{i}", "echo", 1, {}),
            None,
            Routing("fast", "o", "a", 1.0),
            Run(PLACEMENT, 10.0 + i, 11.0 + i),
        )
        for i in range(200)
    ]
    wire = pickle.dumps(pack_outcomes(outcomes))
    assert wire.count(PLACEMENT.node_id.encode()) == 1
    assert wire.count(PLACEMENT.actor_id.encode()) == 1


def test_a_run_record_is_what_the_queue_writes():
    task = TaskPayload("t1", "echo", 4, {})
    lost = Outcome.failure(
        task, OutcomeStatus.SYSTEM, "lost", run=Run(PLACEMENT, 0.0, 1.5), kind="actor_died"
    )
    # tasks.queue.RUN_FIELDS, in order
    assert lost.run_record() == (*PLACEMENT, 0.0, 1.5, "system", None)
    outcomes = {
        OutcomeStatus.OK: "completed",
        OutcomeStatus.ERROR: "error",
        OutcomeStatus.PERMANENT: "error",
        OutcomeStatus.TIMED_OUT: "timeout",
        OutcomeStatus.CANCELLED: "cancelled",
    }
    for status, outcome in outcomes.items():
        ran = Outcome.failure(task, status, "x", run=Run(PLACEMENT, 0.0, 1.0, "log"))
        assert ran.run_record()[-2:] == (outcome, "log")
    assert Outcome.failure(task, OutcomeStatus.UNAVAILABLE, "nobody ran it").run_record() is None


def test_ray_losses_are_translated_with_their_kind():
    from ray.exceptions import (
        ActorDiedError,
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        OwnerDiedError,
        RayActorError,
        WorkerCrashedError,
    )

    from organism.ray.errors import system_kind, translated

    node = "The actor died because its node has died. Node Id: 1234"
    oom = "The actor is dead because its worker process has died: killed due to memory pressure"
    cases = [
        (ActorDiedError(), "actor_died"),
        (
            RayActorError(error_msg="The actor is dead because it was killed by `ray.kill`."),
            "actor_died",
        ),
        (RayActorError(error_msg=node), "node_died"),
        (RayActorError(error_msg="x", preempted=True), "node_died"),
        (RayActorError(error_msg=oom), "out_of_memory"),
        (RayActorError(error_msg="no room at the inn"), "actor_died"),
        (
            OutOfMemoryError("Task was killed due to the node running low on memory."),
            "out_of_memory",
        ),
        (NodeDiedError("node gone"), "node_died"),
        (ObjectLostError("ab" * 14, b"", ""), "object_lost"),
        (OwnerDiedError("ab" * 14, b"", ""), "object_lost"),
        (WorkerCrashedError(), "worker_died"),
        (ValueError("a bug"), None),
    ]
    for exc, kind in cases:
        assert system_kind(exc) == kind, exc
        if kind is None:
            continue
        try:
            with translated("agent a_agent_0"):
                raise exc
        except ActorUnavailable as lost:
            assert lost.kind == kind
            assert str(lost).startswith("agent a_agent_0 died or cannot be reached")
            # It survives a trip through pickle (Ray sends exceptions so).
            assert pickle.loads(pickle.dumps(lost)).kind == kind
