"""/metrics: access, the Prometheus text it serves, and counters summed across dispatchers."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from organism import status
from organism.dispatcher import Dispatcher, DispatcherConfig, QueueStore
from organism.messages import Outcome, OutcomeStatus, Placement, Routing, Run
from organism.metrics import HistogramSet
from tasks import heartbeats, queue, selectors
from tasks.auth import create_token
from tasks.models import Dispatcher as Heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def coordinator_down():
    """rundispatcher reported the Coordinator unreachable (organism.status)."""
    status.publish(namespace=settings.RAY_NAMESPACE, ping_ms=None, error="down", summary=None)


@pytest.fixture
def coordinator_up():
    status.publish(namespace=settings.RAY_NAMESPACE, ping_ms=2.5, error=None, summary={})


@pytest.fixture
def scrape(make_user):
    user = make_user("scraper", "viewer")
    token = create_token(user, name="prometheus")[1]
    web = Client(headers={"Authorization": f"Bearer {token}"})

    def get() -> dict[str, dict[tuple, float]]:
        response = web.get("/metrics")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return parse(response.content.decode())

    return get


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """sample name → {sorted label items: value}."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def stats(counters: dict[str, int], run: list[float] = (), circuit: str = "closed") -> dict:
    histograms = HistogramSet()
    for seconds in run:
        histograms.observe("run_seconds", "echo", seconds)
    return {"counters": counters, "histograms": histograms.data, "circuit": circuit}


def beat(name: str, document: dict) -> None:
    heartbeats.beat(name=name, node="n", pid=1, in_flight=0, processed=0, stats=document)


def heartbeat_stats(name: str) -> dict:
    try:
        return Heartbeat.objects.get(name=name).stats
    finally:
        connections.close_all()  # this worker thread's own connection


def test_it_needs_a_token_or_a_staff_session_unless_public(settings, coordinator_down, client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert "createapitoken" in response.content.decode()
    assert Client(headers={"Authorization": "Bearer wrong"}).get("/metrics").status_code == 401

    settings.SEEDCORE_METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200


def test_a_viewers_session_may_scrape_and_a_session_without_permissions_may_not(
    make_user, coordinator_down
):
    web = Client()
    web.force_login(make_user("op", "viewer"))
    assert web.get("/metrics").status_code == 200
    web.force_login(make_user("staff", None, is_staff=True))
    assert web.get("/metrics").status_code == 401


def test_counts_by_status_and_a_down_coordinator_are_metrics_not_errors(scrape, coordinator_down):
    queue.enqueue_many([{"type": "echo"} for _ in range(3)])
    queue.claim(dispatcher="d1", batch=1)
    samples = scrape()
    tasks = {dict(labels)["status"]: value for labels, value in samples["seedcore_tasks"].items()}
    assert tasks["QUEUED"] == 2 and tasks["RUNNING"] == 1 and tasks["FAILED"] == 0
    assert samples["seedcore_coordinator_up"][()] == 0
    assert "seedcore_coordinator_ping_seconds" not in samples


def test_a_live_coordinator_reports_its_ping(scrape, coordinator_up):
    samples = scrape()
    assert samples["seedcore_coordinator_up"][()] == 1
    assert samples["seedcore_coordinator_ping_seconds"][()] == pytest.approx(0.0025)


def test_counters_and_histograms_are_summed_across_dispatchers(scrape, coordinator_down):
    beat("node-a/1", stats({"claimed": 5, "completed": 4, "retried": 1}, run=[0.02, 0.3]))
    beat("node-b/1", stats({"claimed": 3, "completed": 2, "failed": 1}, run=[7.0], circuit="open"))
    samples = scrape()
    assert samples["seedcore_tasks_claimed_total"][()] == 8
    assert samples["seedcore_tasks_completed_total"][()] == 6
    assert samples["seedcore_tasks_failed_total"][()] == 1
    assert samples["seedcore_tasks_retried_total"][()] == 1
    assert samples["seedcore_task_run_seconds_count"][(("type", "echo"),)] == 3
    assert samples["seedcore_task_run_seconds_sum"][(("type", "echo"),)] == pytest.approx(7.32)
    buckets = samples["seedcore_task_run_seconds_bucket"]
    assert buckets[(("le", "0.025"), ("type", "echo"))] == 1
    assert buckets[(("le", "0.5"), ("type", "echo"))] == 2
    assert buckets[(("le", "+Inf"), ("type", "echo"))] == 3
    assert samples["seedcore_dispatchers_alive"][()] == 2
    circuit = samples["seedcore_dispatcher_circuit_open"]
    assert circuit[(("dispatcher", "node-b/1"), ("state", "open"))] == 1
    assert circuit[(("dispatcher", "node-a/1"), ("state", "closed"))] == 0
    ages = samples["seedcore_dispatcher_heartbeat_age_seconds"]
    assert all(0 <= age < 5 for age in ages.values()) and len(ages) == 2


def test_forgotten_dispatchers_and_reaped_tasks_keep_the_totals_from_going_back(
    scrape, coordinator_down
):
    beat("a/1", stats({"claimed": 5, "completed": 5}, run=[0.1]))
    beat("b/1", stats({"claimed": 2, "completed": 1}))
    heartbeats.forget_dispatcher("a/1")  # a clean stop
    Heartbeat.objects.filter(name="b/1").update(last_beat_at="2000-01-01T00:00:00Z")
    assert heartbeats.forget_dead_dispatchers(silent_for=60) == 1  # a killed one, long silent
    heartbeats.add_to_totals(heartbeats.SUPERVISOR_TOTALS, {"counters": {"reaped": 4}})
    beat("a/2", stats({"claimed": 1}))
    samples = scrape()
    assert samples["seedcore_tasks_claimed_total"][()] == 8
    assert samples["seedcore_tasks_completed_total"][()] == 6
    assert samples["seedcore_tasks_reaped_total"][()] == 4
    assert samples["seedcore_task_run_seconds_count"][(("type", "echo"),)] == 1
    assert samples["seedcore_dispatchers_alive"][()] == 1


def test_a_real_dispatcher_persists_what_it_counts(scrape, coordinator_down):
    """The dispatcher loop writes counters and histograms with its heartbeat (fake Coordinator)."""
    queue.enqueue_many([{"type": "echo"} for _ in range(4)])
    seen = {}

    def outcomes(tasks):
        return [
            Outcome.success(task, {"echo": 1}, Routing("fast", None, None, 0.0)) for task in tasks
        ]

    async def done(dispatcher) -> bool:
        if dispatcher.stats.completed < 4:
            return False
        await asyncio.sleep(0.2)  # a heartbeat after the last write
        seen["row"] = await asyncio.to_thread(heartbeat_stats, "solo/1")
        return True

    run_solo_dispatcher(outcomes, done)
    row = seen["row"]
    assert row["counters"]["completed"] == 4 and row["circuit"] == "closed"
    assert row["histograms"]["queue_wait_seconds"]["echo"]["count"] == 4
    # The clean stop folded the row into the totals: nothing is lost.
    samples = scrape()
    assert samples["seedcore_tasks_completed_total"][()] == 4
    assert samples["seedcore_task_queue_wait_seconds_count"][(("type", "echo"),)] == 4
    assert samples["seedcore_task_run_seconds_count"][(("type", "echo"),)] == 4


def test_an_open_circuit_shows_in_health_and_on_the_dashboard(admin_client, coordinator_down):
    from django.template.loader import render_to_string

    from dashboard.live import dispatcher_rows

    beat("a/1", stats({}, circuit="open"))
    beat("b/1", stats({}))
    health = admin_client.get("/coordinator/health").json()
    assert {d["name"]: d["circuit"] for d in health["dispatchers"]} == {
        "a/1": "open",
        "b/1": "closed",
    }
    html = render_to_string(
        "dashboard/partials/dispatchers.html", {"dispatchers": dispatcher_rows()}
    )
    assert html.count("circuit open") == 1


def test_labels_are_only_registered_types_so_random_types_keep_metrics_small(
    coordinator_down, make_user
):
    import random
    import string

    from organism.handlers import registered_types
    from organism.metrics import OTHER_TYPE

    rng = random.Random(15)
    types = ["".join(rng.choices(string.ascii_letters, k=24)) for _ in range(20_000)]
    # A dispatcher labels only registered types...
    histograms = HistogramSet()
    for task_type in [*types, "echo"]:
        histograms.observe("run_seconds", task_type, 0.1)
    assert set(histograms.data["run_seconds"]) == {"echo", OTHER_TYPE}
    assert histograms.data["run_seconds"][OTHER_TYPE]["count"] == 20_000
    beat("new/1", {"counters": {}, "histograms": histograms.data})
    # ...and /metrics folds what an older dispatcher wrote, and the totals kept, into `other`.
    unbounded = {t: {"buckets": [1] + [0] * 13, "sum": 0.001, "count": 1} for t in types}
    beat("old/1", {"counters": {}, "histograms": {"run_seconds": unbounded}})
    heartbeats.add_to_totals("old-totals", {"histograms": {"run_seconds": unbounded}})
    web = Client()
    web.force_login(make_user("op", "viewer"))
    body = web.get("/metrics").content
    assert len(body) < 200_000, len(body)
    samples = parse(body.decode())
    counts = samples["seedcore_task_run_seconds_count"]
    assert {dict(labels)["type"] for labels in counts} <= {*registered_types(), OTHER_TYPE}
    assert counts[(("type", OTHER_TYPE),)] == 60_000


def test_attempts_ray_lost_are_counted_by_kind_and_retried_at_once(scrape, coordinator_down):
    """A real dispatcher writes SYSTEM outcomes (fake Coordinator): the task is retried at
    once, completes, keeps both runs, and /metrics counts the loss by its kind."""
    task_id = queue.enqueue(type="echo")["id"]
    where = Placement("ab" * 28, "10.0.0.7", 4242, "cd" * 16, "utility_organ_1")

    def outcomes(tasks):
        now = time.time()
        return [
            Outcome.failure(
                task,
                OutcomeStatus.SYSTEM,
                "system failure (actor_died): agent a_agent_0 failed",
                run=Run(where, now, now, "[lost: actor_died]"),
                kind="actor_died",
            )
            if task.attempt == 1
            else Outcome.success(task, 1, Routing("fast", None, None, 0.0), Run(where, now, now))
            for task in tasks
        ]

    def counted() -> bool:
        row = heartbeat_stats("solo/1")
        return row.get("counters", {}).get("system_failures.actor_died") == 1

    async def done(dispatcher) -> bool:
        # Until a heartbeat carries the count (the clean stop folds the row into the totals).
        return dispatcher.stats.completed >= 1 and await asyncio.to_thread(counted)

    dispatcher = run_solo_dispatcher(outcomes, done)
    task = selectors.get_task(task_id)
    assert (task["status"], task["attempts"], task["system_failures"]) == ("COMPLETED", 2, 1)
    assert [(r["attempt"], r["outcome"]) for r in task["runs"]] == [(1, "system"), (2, "completed")]
    assert dispatcher.stats.retried == 1
    samples = scrape()
    lost = samples["seedcore_task_system_failures_total"]
    assert lost[(("kind", "actor_died"),)] == 1
    assert lost[(("kind", "out_of_memory"),)] == 0  # every kind is shown, 0 until it happens
    assert samples["seedcore_tasks_retried_total"][()] == 1


def run_solo_dispatcher(outcomes, done) -> Dispatcher:
    """Run a real dispatcher loop ("solo/1") whose fake Coordinator answers each batch with
    ``outcomes(tasks)``, until ``await done(dispatcher)``; then stop it cleanly."""

    class Coordinator:
        async def run_chunks(self, tasks):
            yield outcomes(tasks)

        async def cancel(self, task_id):
            return False

    async def source():
        return Coordinator()

    async def waker(timeout):
        await asyncio.sleep(timeout)

    config = DispatcherConfig(heartbeat_seconds=0.05, poll_seconds=0.02, grace_seconds=1.0)
    store = QueueStore("solo/1", config)
    dispatcher = Dispatcher("solo/1", store=store, coordinator=source, waker=waker, config=config)

    async def run():
        loop = asyncio.create_task(dispatcher.run())
        while not await done(dispatcher):
            await asyncio.sleep(0.02)
        dispatcher.stop()
        await loop

    try:
        asyncio.run(run())
    finally:
        store.close()
    return dispatcher
