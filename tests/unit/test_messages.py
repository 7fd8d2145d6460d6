"""The messages between dispatchers, the Coordinator and agents, and the Ray edge's border."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from organism.messages import (
    Outcome,
    OutcomeStatus,
    Routing,
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
