"""The tasks endpoints over Django's test client: submit, list, read, run now, cancel, and
every error they can answer with."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tasks import queue, selectors
from tasks.models import Task
from tasks.validation import MAX_DESCRIPTION_LENGTH, MAX_PARAMS_BYTES

pytestmark = pytest.mark.django_db


def post_json(client, path: str, body) -> object:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data, content_type="application/json")


def make_task(task_id: str, type: str = "echo", **fields) -> str:
    """A QUEUED task with a chosen ID (to set up prefixes); returns its ID."""
    Task.objects.create(id=uuid.UUID(task_id), type=type, **fields)
    return task_id


def failed_task() -> str:
    task_id = queue.enqueue(type="fail")["id"]
    [claimed] = queue.claim(dispatcher="d-test", batch=1)
    assert claimed["id"] == task_id
    queue.fail(task_id=task_id, dispatcher="d-test", attempt=1, error="boom", permanent=True)
    return task_id


def completed_task() -> str:
    task_id = queue.enqueue(type="echo")["id"]
    queue.claim(dispatcher="d-test", batch=1)
    assert queue.complete(task_id=task_id, dispatcher="d-test", attempt=1, result={"x": 1})
    return task_id


# ---------------------------------------------------------------------------------------------
# POST /tasks


def test_submit_with_only_a_type_queues_the_task(api):
    response = post_json(api, "/tasks", {"type": "test", "description": "Test task"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "QUEUED"
    assert body["type"] == "test" and body["description"] == "Test task"
    assert body["params"] == {} and body["attempts"] == 0 and body["drift_score"] == 0.0
    stored = selectors.get_task(body["id"])
    assert stored["status"] == "QUEUED" and stored["description"] == "Test task"


def test_submit_stores_every_field(api):
    run_after = datetime.now(UTC) + timedelta(hours=1)
    response = post_json(
        api,
        "/tasks",
        {
            "type": "echo",
            "params": {"nested": {"list": [1, 2.5, None, "x"]}},
            "description": "all the fields",
            "domain": "analysis",
            "drift_score": 0.75,
            "priority": 7.0,
            "max_attempts": 2,
            "run_after": run_after.isoformat(),
        },
    )
    assert response.status_code == 201, response.content
    stored = selectors.get_task(response.json()["id"])
    assert stored["params"] == {"nested": {"list": [1, 2.5, None, "x"]}}
    assert stored["domain"] == "analysis" and stored["drift_score"] == 0.75
    assert stored["priority"] == 7 and stored["max_attempts"] == 2
    assert abs((stored["run_after"] - run_after).total_seconds()) < 0.001


def test_submit_accepts_a_type_no_handler_knows(api):
    # Web and workers may run different code: the dispatcher fails it with the registry's
    # message, the API does not second-guess it.
    response = post_json(api, "/tasks", {"type": "no_such_handler_anywhere"})
    assert response.status_code == 201
    assert response.json()["status"] == "QUEUED"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "type"),
        ({"type": ""}, "type"),
        ({"type": 5}, "type"),
        ({"type": "echo", "params": [1, 2]}, "params"),
        ({"type": "echo", "params": "text"}, "params"),
        ({"type": "echo", "params": None}, "params"),
        ({"type": "echo", "drift_score": 1.5}, "drift_score"),
        ({"type": "echo", "drift_score": -0.1}, "drift_score"),
        ({"type": "echo", "drift_score": "0.5"}, "drift_score"),
        ({"type": "echo", "drift_score": True}, "drift_score"),
        ({"type": "echo", "surprise": 1}, "surprise"),
        ({"type": "echo", "description": "d" * (MAX_DESCRIPTION_LENGTH + 1)}, "description"),
        ({"type": "echo", "params": {"blob": "x" * MAX_PARAMS_BYTES}}, "params"),
        ({"type": "echo", "params": {"text": "nul\x00byte"}}, "params"),
        ({"type": "ec\x00ho"}, "type"),
        ({"type": "echo", "run_after": "2030-01-01T00:00:00"}, "run_after"),
        ({"type": "echo", "run_after": "tomorrow"}, "run_after"),
        ({"type": "echo", "run_after": 1700000000}, "run_after"),
        ({"type": "echo", "run_after": "9999-12-31T23:59:59-16:00"}, "run_after"),
        ({"type": "echo", "priority": True}, "priority"),
        ({"type": "echo", "priority": 1.5}, "priority"),
        ({"type": "echo", "max_attempts": 0}, "max_attempts"),
    ],
)
def test_submit_refuses_an_invalid_body_naming_the_field(api, body, field):
    response = post_json(api, "/tasks", body)
    assert response.status_code == 422, response.content
    payload = response.json()
    assert field in payload["detail"]
    assert field in [error["field"] for error in payload["errors"]]
    assert not Task.objects.exists()


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_submit_refuses_a_non_finite_drift_score(api, raw):
    response = post_json(api, "/tasks", '{"type": "echo", "drift_score": ' + raw + "}")
    assert response.status_code == 422, response.content
    assert "drift_score" in response.json()["detail"]


def test_submit_refuses_non_finite_numbers_inside_params(api):
    response = post_json(api, "/tasks", '{"type": "echo", "params": {"x": NaN}}')
    assert response.status_code == 422
    assert "params" in response.json()["detail"]


def test_submit_refuses_a_body_that_is_not_json(api):
    response = post_json(api, "/tasks", "{not json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', ""])
def test_submit_refuses_a_body_that_is_not_a_json_object(api, raw):
    response = post_json(api, "/tasks", raw)
    assert response.status_code in (400, 422), response.content
    assert response.json()["detail"]
    assert not Task.objects.exists()


# ---------------------------------------------------------------------------------------------
# GET /tasks


def created_in_order(task_ids: list[str]) -> None:
    """Spread the tasks' created_at a minute apart, in list order (PostgreSQL's now() is the
    same for a whole test transaction)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    for n, task_id in enumerate(task_ids):
        Task.objects.filter(id=task_id).update(created_at=start + timedelta(minutes=n))


def test_list_is_newest_first_with_items_and_next_cursor(api):
    ids = [queue.enqueue(type="echo", params={"n": n})["id"] for n in range(3)]
    created_in_order(ids)
    body = api.get("/tasks").json()
    assert set(body) == {"items", "next_cursor"}
    assert [item["id"] for item in body["items"]] == list(reversed(ids))
    assert body["next_cursor"] is None


def test_list_pages_with_a_cursor_without_gaps_or_repeats(api):
    ids = {queue.enqueue(type="echo")["id"] for _ in range(7)}
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.get("/tasks", query).json()
        pages += 1
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7 and set(seen) == ids


def test_list_filters_by_status_type_and_domain(api):
    queued = queue.enqueue(type="echo", domain="analysis")["id"]
    queue.enqueue(type="echo", domain="planning")
    queue.enqueue(type="test", domain="analysis")
    cancelled = queue.cancel(queue.enqueue(type="echo")["id"])["id"]

    def ids(**query):
        response = api.get("/tasks", query)
        assert response.status_code == 200, response.content
        return [item["id"] for item in response.json()["items"]]

    assert ids(status="CANCELLED") == [cancelled]
    assert ids(type="echo", domain="analysis") == [queued]
    assert len(ids(type="echo")) == 3
    assert ids(type="nothing") == []


def test_list_filters_by_a_created_window(api):
    old = make_task(str(uuid.uuid4()))
    Task.objects.filter(id=old).update(created_at=datetime(2020, 1, 1, tzinfo=UTC))
    new = queue.enqueue(type="echo")["id"]
    after = api.get("/tasks", {"created_after": "2021-01-01T00:00:00Z"}).json()["items"]
    before = api.get("/tasks", {"created_before": "2021-01-01T00:00:00+00:00"}).json()["items"]
    assert [item["id"] for item in after] == [new]
    assert [item["id"] for item in before] == [old]


def test_list_filters_by_an_id_prefix(api):
    wanted = make_task("abcd1234-0000-4000-8000-000000000001")
    make_task("abce1234-0000-4000-8000-000000000001")
    items = api.get("/tasks", {"id": "ABCD"}).json()["items"]
    assert [item["id"] for item in items] == [wanted]


@pytest.mark.parametrize(
    "query, status, word",
    [
        ({"limit": 0}, 422, "limit"),
        ({"limit": 501}, 422, "limit"),
        ({"limit": "many"}, 422, "limit"),
        ({"status": "DONE"}, 422, "status"),
        ({"created_after": "yesterday"}, 422, "created_after"),
        ({"created_after": "2024-01-01T00:00:00"}, 422, "created_after"),
        ({"created_after": "1700000000"}, 422, "created_after"),
        ({"created_before": "0001-01-01T00:00:00+16:00"}, 422, "created_before"),
        ({"id": ""}, 400, "not a task ID"),
        ({"type": "a\x00b"}, 422, "type"),
        ({"cursor": "!!not-a-cursor!!"}, 400, "cursor"),
        ({"id": "xyz"}, 400, "task ID"),
        ({"id": "ab"}, 400, "at least 4"),
    ],
)
def test_list_refuses_bad_query_parameters(api, query, status, word):
    response = api.get("/tasks", query)
    assert response.status_code == status, response.content
    assert word in response.json()["detail"]


def test_list_accepts_the_largest_page(api):
    queue.enqueue(type="echo")
    assert api.get("/tasks", {"limit": 500}).status_code == 200


# ---------------------------------------------------------------------------------------------
# GET /tasks/{id} and /status


def test_get_by_full_id_and_by_prefix(api):
    task_id = queue.enqueue(type="echo", params={"a": 1})["id"]
    for text in (task_id, task_id[:8], task_id[:4].upper(), task_id.replace("-", "")):
        response = api.get(f"/tasks/{text}")
        assert response.status_code == 200, (text, response.content)
        body = response.json()
        assert body["id"] == task_id and body["params"] == {"a": 1}
        assert body["error_history"] == [] and body["cancel_requested"] is False


def test_a_task_lists_its_runs_with_exactly_their_fields(api):
    task_id = queue.enqueue(type="echo")["id"]
    queue.claim(dispatcher="d1", batch=1)
    # node id, node IP, pid, actor id, organ, start, end (epoch seconds), outcome, log
    run = ("ab" * 28, "10.0.0.7", 4242, "cd" * 16, "utility_organ_1", 1796238000.0, 1796238001.25)
    queue.complete_many(
        dispatcher="d1", results=[(task_id, 1, {"ok": 1}, (*run, "completed", "hello\n"))]
    )
    body = api.get(f"/tasks/{task_id}").json()
    assert body["runs"] == [
        {
            "attempt": 1,
            "node_id": "ab" * 28,
            "node_ip": "10.0.0.7",
            "pid": 4242,
            "actor_id": "cd" * 16,
            "organ_id": "utility_organ_1",
            "started_at": "2026-12-02T19:00:00Z",
            "finished_at": "2026-12-02T19:00:01.250Z",
            "outcome": "completed",
            "log": "hello\n",
        }
    ]
    assert body["system_failures"] == 0
    assert api.get(f"/tasks/{queue.enqueue(type='echo')['id']}").json()["runs"] == []


def test_status_has_exactly_the_polling_fields(api):
    task_id = failed_task()
    body = api.get(f"/tasks/{task_id[:8]}/status").json()
    assert set(body) == {"id", "status", "attempts", "updated_at", "error"}
    assert body["id"] == task_id and body["status"] == "FAILED"
    assert body["attempts"] == 1 and body["error"] == "boom"


@pytest.mark.parametrize("suffix", ["", "/status"])
def test_unknown_id_is_404(api, suffix):
    response = api.get(f"/tasks/{uuid.uuid4()}{suffix}")
    assert response.status_code == 404
    assert "no task" in response.json()["detail"]


@pytest.mark.parametrize("text", ["xyz!", "abc", "0123456789abcdef0123456789abcdef0"])
def test_malformed_id_is_400(api, text):
    response = api.get(f"/tasks/{text}")
    assert response.status_code == 400
    assert "task ID" in response.json()["detail"] or "too short" in response.json()["detail"]


def test_ambiguous_prefix_is_409_listing_the_candidates(api):
    first = make_task("beef0000-0000-4000-8000-000000000001")
    second = make_task("beef0000-0000-4000-8000-000000000002")
    for method, path in (("get", "/tasks/beef"), ("post", "/tasks/beef/cancel")):
        response = getattr(api, method)(path)
        assert response.status_code == 409
        body = response.json()
        assert body["candidates"] == [first, second]
        assert first in body["detail"] and second in body["detail"]
    assert selectors.get_task(first)["status"] == "QUEUED"


# ---------------------------------------------------------------------------------------------
# POST /tasks/{id}/run and /cancel


def test_run_queues_a_failed_task_again(api):
    task_id = failed_task()
    response = api.post(f"/tasks/{task_id[:6]}/run")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "QUEUED" and body["attempts"] == 0 and body["error"] is None
    assert selectors.get_task(task_id)["status"] == "QUEUED"


def test_run_of_a_completed_task_is_409_naming_its_status(api):
    task_id = completed_task()
    response = api.post(f"/tasks/{task_id}/run")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "COMPLETED" and "COMPLETED" in body["detail"]
    assert selectors.get_task(task_id)["status"] == "COMPLETED"


def test_cancel_of_a_queued_task_cancels_it(api):
    task_id = queue.enqueue(type="echo")["id"]
    response = api.post(f"/tasks/{task_id[:8]}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert selectors.get_task(task_id)["status"] == "CANCELLED"
    # Cancelling again is harmless.
    assert api.post(f"/tasks/{task_id}/cancel").json()["status"] == "CANCELLED"


def test_cancel_of_a_running_task_requests_the_cancel(api):
    task_id = queue.enqueue(type="sleep")["id"]
    queue.claim(dispatcher="d-test", batch=1)
    body = api.post(f"/tasks/{task_id}/cancel").json()
    assert body["status"] == "RUNNING" and body["cancel_requested"] is True


def test_cancel_of_a_completed_task_is_409_naming_its_status(api):
    task_id = completed_task()
    response = api.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "COMPLETED"
    assert "cannot cancel" in body["detail"] and "COMPLETED" in body["detail"]


@pytest.mark.parametrize("action", ["run", "cancel"])
def test_actions_on_unknown_or_malformed_ids(api, action):
    assert api.post(f"/tasks/{uuid.uuid4()}/{action}").status_code == 404
    assert api.post(f"/tasks/nothex/{action}").status_code == 400
