"""The queue's controls over HTTP: GET /queue, POST /queue/pause and /queue/resume, PUT
/queue/limit, and the ``waiting`` field of GET /tasks/{id}."""

from __future__ import annotations

import pytest
from django.test import Client

from tasks import queue, selectors
from tasks.auth import create_token

pytestmark = pytest.mark.django_db


def post(api: Client, path: str, body) -> tuple[int, dict]:
    response = api.post(path, body, content_type="application/json")
    return response.status_code, response.json()


def test_pause_a_type_then_resume_it(api):
    code, body = post(api, "/queue/pause", {"type": "resize"})
    assert code == 200
    assert body["all_paused"] is False
    resize = next(row for row in body["types"] if row["type"] == "resize")
    assert resize["paused"] and resize["paused_at"]

    listed = api.get("/queue").json()
    assert listed["types"] == body["types"]

    code, body = post(api, "/queue/resume", {"type": "resize"})
    assert code == 200 and "resize" not in [row["type"] for row in body["types"]]
    assert selectors.queue_state().anything_paused is False


def test_an_empty_body_pauses_and_resumes_everything(api):
    code, body = post(api, "/queue/pause", {})
    assert code == 200 and body["all_paused"] is True and body["all_paused_at"]
    assert selectors.queue_state().all_paused

    code, body = post(api, "/queue/resume", {})
    assert code == 200 and body["all_paused"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"typ": "resize"}, "typ"),
        ({"type": ""}, "type"),
        ({"type": "   "}, "type"),
        ({"type": "a\u0000b"}, "type"),
        ({"type": 3}, "type"),
        ({"type": "x" * 201}, "type"),
        (["resize"], "body"),
    ],
)
def test_a_body_of_the_wrong_shape_is_422_naming_the_field(api, body, field):
    code, answer = post(api, "/queue/pause", body)
    assert code == 422
    assert field in [error["field"] for error in answer["errors"]]
    assert selectors.queue_state().anything_paused is False


def test_a_limit_is_a_whole_number_as_json_has_it(api):
    response = api.put(
        "/queue/limit", {"type": "resize", "limit": 2.0}, content_type="application/json"
    )
    assert response.status_code == 200
    assert selectors.queue_control("resize")["concurrency_limit"] == 2


def test_override_a_limit_and_clear_it(api):
    queue.declare_concurrency({"resize": 4})
    response = api.put(
        "/queue/limit", {"type": "resize", "limit": 2}, content_type="application/json"
    )
    assert response.status_code == 200
    resize = next(row for row in response.json()["types"] if row["type"] == "resize")
    assert (resize["concurrency_limit"], resize["declared_concurrency"], resize["limit"]) == (
        2,
        4,
        2,
    )

    cleared = api.put(
        "/queue/limit", {"type": "resize", "limit": None}, content_type="application/json"
    )
    assert [row["limit"] for row in cleared.json()["types"] if row["type"] == "resize"] == [4]


@pytest.mark.parametrize("limit", [0, -3, 1.5, "2", True])
def test_a_bad_limit_is_422_naming_it(api, limit):
    response = api.put(
        "/queue/limit", {"type": "resize", "limit": limit}, content_type="application/json"
    )
    assert response.status_code == 422
    assert "limit" in [error["field"] for error in response.json()["errors"]]


def test_changes_need_the_operate_scope_and_reading_needs_read(api_user):
    reader = Client(headers={"Authorization": f"Bearer {create_token(api_user, scope='read')[1]}"})
    assert reader.get("/queue").status_code == 200
    assert post(reader, "/queue/pause", {"type": "resize"})[0] == 403
    assert post(reader, "/queue/resume", {})[0] == 403
    limit = reader.put("/queue/limit", {"type": "x", "limit": 1}, content_type="application/json")
    assert limit.status_code == 403
    assert selectors.queue_state().anything_paused is False
    assert Client().get("/queue").status_code == 401


def test_a_task_says_why_it_waits(api):
    task = queue.enqueue(type="resize")
    assert api.get(f"/tasks/{task['id']}").json()["waiting"] is None

    post(api, "/queue/pause", {"type": "resize"})

    assert api.get(f"/tasks/{task['id'][:8]}").json()["waiting"] == "type resize is paused"
