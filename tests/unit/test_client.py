"""organism.client's connection to Ray: bounded by a timeout, one attempt shared by every
caller, and every failure a CoordinatorUnavailable that says what to do. ``ensure_connected``
is replaced by a stand-in here; the real one is used by tests/api/test_organism_api.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from organism import client
from organism.raycluster import RayUnavailable


@pytest.fixture
def not_connected(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(client, "_connect_attempt", None)


def test_a_hanging_connect_times_out_and_is_shared(monkeypatch, not_connected):
    release = threading.Event()
    calls = []

    def hanging_connect() -> None:
        calls.append(1)
        release.wait(10)

    monkeypatch.setattr(client, "ensure_connected", hanging_connect)
    for _ in range(3):
        with pytest.raises(client.CoordinatorUnavailable, match="did not answer within 0.1 s"):
            asyncio.run(client.connect(timeout=0.1))
    assert len(calls) == 1  # one thread waits on Ray, not one per request

    release.set()
    asyncio.run(client.connect(timeout=5))  # the shared attempt finished: connected


def test_ray_unavailable_becomes_coordinator_unavailable(monkeypatch, not_connected):
    def refuse() -> None:
        raise RayUnavailable("cannot reach Ray; start it with `python manage.py rundispatcher`")

    monkeypatch.setattr(client, "ensure_connected", refuse)
    with pytest.raises(client.CoordinatorUnavailable, match="rundispatcher"):
        asyncio.run(client.connect(timeout=5))


def test_an_unreachable_address_still_names_rundispatcher(monkeypatch, not_connected):
    def refuse() -> None:
        raise RayUnavailable("cannot reach Ray at 10.0.0.1:6379 (Connection refused)")

    monkeypatch.setattr(client, "ensure_connected", refuse)
    with pytest.raises(client.CoordinatorUnavailable, match="10.0.0.1:6379.*rundispatcher"):
        asyncio.run(client.connect(timeout=5))


def test_a_failed_attempt_is_retried_by_the_next_caller(monkeypatch, not_connected):
    outcomes = [ConnectionError("refused"), None]

    def flaky() -> None:
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome

    monkeypatch.setattr(client, "ensure_connected", flaky)
    with pytest.raises(client.CoordinatorUnavailable, match="refused.*rundispatcher"):
        asyncio.run(client.connect(timeout=5))
    asyncio.run(client.connect(timeout=5))
    assert outcomes == []


def test_control_tasks_are_plain_dicts_for_the_coordinator():
    task = client.control_task("execute_on_organ", {"organ_id": "o1", "task": {"type": "echo"}})
    assert task["id"].startswith("api-") and task["type"] == "execute_on_organ"
    assert task["params"] == {"organ_id": "o1", "task": {"type": "echo"}}
    assert task["attempts"] == 1 and task["drift_score"] == 0.0
