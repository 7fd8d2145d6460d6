"""Search and act on all that match, over the HTTP API: the new list filters,
POST /tasks/bulk (operate scope) and GET /tasks/bulk/{id} (read scope)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.test import Client

from tasks import queue, selectors
from tasks.auth import create_token
from tasks.models import BulkAction, Task

pytestmark = pytest.mark.django_db


def post_json(client, path: str, body) -> object:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data, content_type="application/json")


def test_list_filters_by_params_containment_error_and_updated_time(api):
    match = queue.enqueue(type="echo", params={"customer": 42, "order": {"id": 1}})
    queue.enqueue(type="echo", params={"customer": 43})
    Task.objects.filter(id=match["id"]).update(error="Quota 100% used")
    query = urlencode(
        {"params": '{"customer": 42}', "error": "100%", "updated_after": "2000-01-01T00:00:00Z"}
    )
    response = api.get(f"/tasks?{query}")
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == [match["id"]]
    none = api.get("/tasks?" + urlencode({"updated_before": "2000-01-01T00:00:00Z"}))
    assert none.json()["items"] == []


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"params": "customer=42"}, 400, "params"),
        ({"params": "[42]"}, 400, "params"),
        ({"params": '{"a": "\\u0000"}'}, 400, "params"),
        ({"updated_after": "yesterday"}, 422, "updated_after"),
        ({"updated_before": "2026-12-02T10:00:00"}, 422, "updated_before"),
    ],
)
def test_list_names_a_bad_search_field(api, query, status, field):
    response = api.get("/tasks?" + urlencode(query))
    assert response.status_code == status
    assert field in response.json()["detail"]


def test_cancel_all_matching_answers_202_and_its_progress(api):
    ids = [queue.enqueue(type="echo", params={"customer": 42})["id"] for _ in range(3)]
    other = queue.enqueue(type="echo", params={"customer": 7})
    response = post_json(
        api, "/tasks/bulk", {"action": "cancel", "filter": {"params": {"customer": 42}}}
    )
    assert response.status_code == 202
    body = response.json()
    assert (body["action"], body["total"], body["filter"]) == (
        "cancel",
        3,
        {"params": {"customer": 42}},
    )
    assert body["url"].endswith(f"/tasks/bulk/{body['id']}")
    progress = api.get(f"/tasks/bulk/{body['id']}").json()
    assert (progress["state"], progress["done"], progress["skipped"], progress["percent"]) == (
        "finished",
        3,
        0,
        100,
    )
    assert {selectors.get_task(task_id)["status"] for task_id in ids} == {"CANCELLED"}
    assert selectors.get_task(other["id"])["status"] == "QUEUED"
    # Named as the audit trail names the caller: the user and the token used.
    assert BulkAction.objects.get().requested_by.startswith("api-user (token ")


def test_a_dry_run_only_counts(api):
    for _ in range(2):
        queue.enqueue(type="echo")
    response = post_json(
        api, "/tasks/bulk", {"action": "retry", "filter": {"type": "echo"}, "dry_run": True}
    )
    assert response.status_code == 200
    assert (response.json()["total"], response.json()["action"]) == (2, "retry")
    assert not BulkAction.objects.exists()
    assert set(Task.objects.values_list("status", flat=True)) == {"QUEUED"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"action": "cancel", "filter": {}}, 400, "filter"),
        ({"action": "cancel", "filter": {"type": "", "params": {}, "error": None}}, 400, "filter"),
        ({"action": "delete", "filter": {"type": "echo"}}, 422, "action"),
        ({"action": "cancel", "filter": {"typo": "echo"}}, 422, "filter.typo"),
        ({"action": "cancel", "filter": {"params": [1]}}, 422, "filter.params"),
        ({"action": "cancel", "filter": {"params": {"a": "\x00"}}}, 422, "filter.params"),
        ({"action": "cancel", "filter": {"id": "xyz"}}, 400, "ID"),
        ({"action": "cancel", "filter": {"created_after": "soon"}}, 422, "filter.created_after"),
        ({"action": "cancel"}, 422, "filter"),
    ],
)
def test_a_bad_bulk_request_names_the_field_and_touches_nothing(api, body, status, field):
    task = queue.enqueue(type="echo")
    response = post_json(api, "/tasks/bulk", body)
    assert response.status_code == status
    assert field in response.json()["detail"]
    assert selectors.get_task(task["id"])["status"] == "QUEUED"
    assert not BulkAction.objects.exists()


def test_bulk_needs_operate_to_start_and_read_to_watch(api_user, api):
    queue.enqueue(type="echo")
    started = post_json(api, "/tasks/bulk", {"action": "cancel", "filter": {"type": "echo"}})
    reader = Client(headers={"Authorization": f"Bearer {create_token(api_user, scope='read')[1]}"})
    refused = post_json(reader, "/tasks/bulk", {"action": "cancel", "filter": {"type": "x"}})
    assert refused.status_code == 403 and "operate" in refused.json()["detail"]
    assert reader.get(f"/tasks/bulk/{started.json()['id']}").status_code == 200
    for unknown in (99999, 0, -1, 2**70):
        assert reader.get(f"/tasks/bulk/{unknown}").status_code == 404
    assert Client().get(f"/tasks/bulk/{started.json()['id']}").status_code == 401
