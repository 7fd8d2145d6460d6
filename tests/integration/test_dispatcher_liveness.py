"""One liveness rule: the reaper, /coordinator/health, the dashboard and /metrics agree on which
dispatchers are alive, whatever SEEDCORE_HEARTBEAT_TIMEOUT says."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from tasks import heartbeats, queue

pytestmark = pytest.mark.django_db(transaction=True)

# Each dispatcher's silence, in seconds, on the database's clock; each holds one RUNNING task
# whose lease is far off, so only the heartbeat decides whether the reaper frees it.
SILENT_FOR = {"fresh": 0, "quiet": 20, "silent": 45}


@pytest.fixture
def dispatchers() -> dict[str, str]:
    """dispatcher name → the id of the task it holds."""
    held = {}
    for name, seconds in SILENT_FOR.items():
        heartbeats.beat(name=name, node="n", pid=1, in_flight=1, processed=0)
        queue.enqueue(type="echo")
        (task,) = queue.claim(dispatcher=name, batch=1, lease_seconds=3600)
        held[name] = task["id"]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE dispatchers SET last_beat_at = now() - %s * interval '1 second' "
                "WHERE name = %s",
                [seconds, name],
            )
    return held


def health_says(client) -> dict[str, bool]:
    return {d["name"]: d["alive"] for d in client.get("/coordinator/health").json()["dispatchers"]}


def dashboard_says(admin_client) -> dict[str, bool]:
    rows = admin_client.get(reverse("dashboard:overview")).context["dispatchers"]
    return {row["name"]: row["alive"] for row in rows}


def metrics_say(client) -> int:
    text = client.get("/metrics").content.decode()
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "seedcore_dispatchers_alive"
    ]
    return int(family.samples[0].value)


def reaper_frees(held: dict[str, str]) -> set[str]:
    """The dispatchers whose task the reaper frees now."""
    by_task = {task_id: name for name, task_id in held.items()}
    return {by_task[row["id"]] for row in queue.reap() if row["id"] in by_task}


@pytest.mark.parametrize(
    "timeout, alive",
    [(30.0, {"fresh", "quiet"}), (15.0, {"fresh"}), (60.0, {"fresh", "quiet", "silent"})],
)
def test_every_reader_agrees_with_the_reaper(
    settings, client, admin_client, dispatchers, timeout, alive
):
    settings.SEEDCORE_HEARTBEAT_TIMEOUT = timeout
    settings.SEEDCORE_METRICS_PUBLIC = True
    expected = {name: name in alive for name in SILENT_FOR}
    assert health_says(admin_client) == expected
    assert dashboard_says(admin_client) == expected
    assert metrics_say(client) == len(alive)
    assert reaper_frees(dispatchers) == set(SILENT_FOR) - alive
