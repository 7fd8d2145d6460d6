"""The organism page, the organism API and the tasks' ``waiting`` show the cluster and the
organs' resources as the Coordinator's manager reports them: a real OrganismManager (in-process
agents, a GPU the test withholds; tests/unit/test_scaling.py) publishes its summary the way
rundispatcher does, and the web reads only PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from organism import status
from tasks import queue
from tests.unit.test_scaling import GPU, UTIL, Clock, Cluster, make

pytestmark = pytest.mark.django_db

REASON = "needs 1 GPU; the cluster has 0 of 0 free; 1 agent pending placement"


@pytest.fixture
def published(registry):
    """A GPU organ grown for 2 tasks on a cluster without GPUs, published with its holds."""

    async def tick() -> dict:
        cluster = Cluster(gpus=0)
        manager = make(cluster, [UTIL, GPU], Clock())
        return await manager.tick({"embed_t": 1, "echo": 1})

    summary = asyncio.run(tick())
    status.publish(namespace=settings.RAY_NAMESPACE, ping_ms=1.0, error=None, summary=summary)
    queue.set_waiting_for(summary["holds"])
    return summary


@pytest.fixture
def registry():
    from organism import handlers
    from organism.handlers import handler

    saved = dict(handlers._registry)
    handler("embed_t")(handlers.echo)
    yield
    handlers._registry.clear()
    handlers._registry.update(saved)


def test_the_organism_page_shows_nodes_pending_agents_backlog_and_scaling(
    organism_admin_client, published
):
    html = organism_admin_client.get(reverse("dashboard:organism")).content.decode()
    assert 'id="cluster-nodes"' in html and 'data-node="head"' in html
    assert "1.5 / 2" in html  # the head's CPUs, free / total
    assert f"Pending: {REASON}." in html
    assert "min 0 / max 4" in html and "backlog 1" in html
    assert "fixed size 1" in html  # UTIL has no scaling target to show
    assert "pending placement</span>" in html  # the agent's state
    assert "0 → 1 agents: backlog 1 &gt; capacity 0 (1 per agent)" in html
    assert "num_gpus=1" in html


def test_the_organism_api_carries_the_same_facts(published, make_user):
    from tasks.auth import create_token

    token = create_token(make_user("reader", "organism admin"), name="t", scope="read")[1]
    api = Client(headers={"Authorization": f"Bearer {token}"})
    body = api.get("/organism/summary").json()
    gpu = next(o for o in body["organs"] if o["organ_id"] == "gpu")
    assert (gpu["min_agents"], gpu["max_agents"], gpu["backlog"]) == (0, 4, 1)
    assert (gpu["placed_count"], gpu["pending_count"], gpu["pending_reason"]) == (0, 1, REASON)
    assert body["nodes"][0]["node_id"] == "head"
    assert body["scaling"][0]["organ_id"] == "gpu"
    assert body["holds"] == {"embed_t": REASON}


def test_a_held_task_says_why_in_the_api_the_list_and_its_page(
    organism_admin_client, published, make_user
):
    from tasks.auth import create_token

    task = queue.enqueue(type="embed_t")
    token = create_token(make_user("reader2", "organism admin"), name="t", scope="read")[1]
    api = Client(headers={"Authorization": f"Bearer {token}"})
    assert api.get(f"/tasks/{task['id']}").json()["waiting"] == REASON
    listing = organism_admin_client.get(reverse("dashboard:tasks")).content.decode()
    assert f'title="{REASON}"' in listing
    page = organism_admin_client.get(reverse("dashboard:task", args=[task["id"]]))
    assert f"Waiting: {REASON}." in page.content.decode()


def test_the_queue_section_says_a_held_type_waits_for_an_agent(organism_admin_client, published):
    queue.enqueue(type="embed_t")
    html = organism_admin_client.get(reverse("dashboard:overview")).content.decode()
    row = html[html.index('data-type="embed_t"') :][:600]
    assert "waiting for an agent" in row and REASON in row
