"""What rundispatcher publishes for the web (organism.status), and the probes that read it."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from organism import status
from organism.models import CoordinatorStatus
from tasks import heartbeats

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def namespace(settings) -> str:
    """The namespace the web reads (the session's Ray fixture may have changed it)."""
    return settings.RAY_NAMESPACE


SUMMARY = {"initialized": True, "organ_count": 1, "organs": [{"organ_id": "utility_organ_1"}]}


def age(namespace: str, seconds: float) -> None:
    CoordinatorStatus.objects.filter(namespace=namespace).update(
        published_at=timezone.now() - timedelta(seconds=seconds)
    )


def notifications_during(action) -> list[str]:
    """Payloads on seedcore_health sent while ``action`` ran, seen by a second connection."""
    params = connection.get_connection_params()
    for django_only in ("context", "cursor_factory", "prepare_threshold"):
        params.pop(django_only, None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {status.HEALTH_CHANNEL}")
        action()
        listener.execute("SELECT 1")  # delivers what arrived meanwhile
        return [notify.payload for notify in listener.notifies(timeout=0.2)]


def test_nothing_published_reads_as_unhealthy_saying_to_start_rundispatcher():
    view = status.coordinator_view(status.read())
    assert view["healthy"] is False and "rundispatcher" in view["error"]


def test_a_fresh_publication_is_healthy_and_a_stale_one_is_not(settings, namespace):
    status.publish(namespace=namespace, ping_ms=1.5, error=None, summary=SUMMARY)
    view = status.coordinator_view(status.read())
    assert view == {"healthy": True, "ping_ms": 1.5, "error": None, "summary": SUMMARY, "age": 0.0}

    settings.SEEDCORE_SUPERVISE_SECONDS = 3.0
    age(namespace, status.stale_after() + 1)
    view = status.coordinator_view(status.read())
    assert view["healthy"] is False and view["ping_ms"] is None
    assert "no word from rundispatcher for 1" in view["error"]


def test_a_published_error_is_unhealthy_and_keeps_the_last_summary_only_while_healthy(namespace):
    status.publish(namespace=namespace, ping_ms=2.0, error=None, summary=SUMMARY)
    status.publish(namespace=namespace, ping_ms=2.0, error=None, summary=None)  # a slow summary
    assert status.read().summary == SUMMARY
    status.publish(namespace=namespace, ping_ms=None, error="the Coordinator died", summary=None)
    view = status.coordinator_view(status.read())
    assert view["healthy"] is False and view["error"] == "the Coordinator died"
    assert view["summary"] is None


def test_only_news_is_announced(namespace):
    def publish(ping_ms, error=None, summary=SUMMARY):
        return lambda: status.publish(
            namespace=namespace, ping_ms=ping_ms, error=error, summary=summary
        )

    assert notifications_during(publish(1.0)) == [namespace]  # first word
    assert notifications_during(publish(3.0)) == []  # ping jitter is not news
    assert notifications_during(publish(None, "gone", None)) == [namespace]
    assert notifications_during(publish(1.0)) == [namespace]  # back


def test_health_probe_and_readyz_judge_by_the_publication(
    client, admin_client, settings, namespace
):
    assert client.get("/coordinator/health").status_code == 503
    ready = client.get("/readyz").json()
    assert "rundispatcher" in ready["checks"]["coordinator"]

    status.publish(namespace=namespace, ping_ms=1.0, error=None, summary=SUMMARY)
    heartbeats.beat(name="dispatcher-a", node="n1", pid=1, in_flight=0, processed=0)
    health = admin_client.get("/coordinator/health")
    assert health.status_code == 200, health.content
    body = health.json()
    assert body["status"] == "healthy" and body["reported_seconds_ago"] < 5
    assert client.get("/readyz").status_code == 200

    age(namespace, 120)  # rundispatcher was killed two minutes ago
    health = admin_client.get("/coordinator/health")
    assert health.status_code == 503
    assert "no word from rundispatcher for 120 s" in health.json()["message"]
    assert client.get("/readyz").status_code == 503


def test_health_tells_strangers_the_status_only_and_readers_or_tokens_the_details(
    client, admin_client, make_user, namespace
):
    from tasks.auth import create_token

    error = "ConnectionError: ray://10.0.3.7:10001 refused; InvalidAuthToken"
    status.publish(namespace=namespace, ping_ms=None, error=error, summary=None)
    heartbeats.beat(name="dispatcher-secret-name", node="n1", pid=1, in_flight=0, processed=0)
    anonymous = client.get("/coordinator/health")
    assert anonymous.status_code == 503 and anonymous.json() == {"status": "unhealthy"}
    wrong = client.get("/coordinator/health", HTTP_AUTHORIZATION="Bearer not-a-token\x00")
    assert wrong.json() == {"status": "unhealthy"}
    staff = admin_client.get("/coordinator/health").json()
    assert staff["message"] == error and staff["dispatchers"][0]["name"] == "dispatcher-secret-name"
    user = make_user("robot", "viewer")
    _, token = create_token(user)
    with_token = client.get("/coordinator/health", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert with_token["message"] == error


@pytest.mark.parametrize(
    "circuit", ["melted", "", None, 7, {"a": 1}, pytest.param("x" * 10_000, id="long")]
)
def test_health_survives_an_unexpected_circuit_value(client, admin_client, namespace, circuit):
    status.publish(namespace=namespace, ping_ms=1.0, error=None, summary=SUMMARY)
    heartbeats.beat(name="dispatcher-a", node="n1", pid=1, in_flight=0, processed=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dispatchers SET stats = jsonb_set(coalesce(stats, '{}'), '{circuit}', %s)",
            [json.dumps(circuit)],
        )
    assert client.get("/coordinator/health").json() == {"status": "healthy"}
    body = admin_client.get("/coordinator/health").json()
    assert body["status"] == "healthy"
    assert body["dispatchers"][0]["circuit"] in ("unknown", "closed")


def test_organism_reads_come_from_the_publication(admin_client, namespace):
    assert admin_client.get("/organism/summary").status_code == 503
    status.publish(namespace=namespace, ping_ms=1.0, error=None, summary=SUMMARY)
    assert admin_client.get("/organism/summary").json() == SUMMARY
    assert admin_client.get("/organism/status").json() == SUMMARY["organs"]
    unknown = admin_client.post(
        "/organism/organs/nope/execute",
        json.dumps({"type": "echo"}),
        content_type="application/json",
    )
    assert unknown.status_code == 400 and "no organ 'nope'" in unknown.json()["detail"]
