"""POST /tasks with a ``unique_key`` or an ``Idempotency-Key``: 201 for a new task, 200 with
``existing: true`` for the task that already answers the request."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from organism.supervisor import Supervisor, SupervisorOptions
from tasks import idempotency, queue
from tasks.auth import create_token
from tasks.models import IdempotencyKey, Status, Task
from tasks.policy import RetentionPolicy

pytestmark = pytest.mark.django_db


def submit(client: Client, body: dict, key: str | None = None):
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post("/tasks", json.dumps(body), content_type="application/json", headers=headers)


# ---------------------------------------------------------------------------------------------
# unique_key


def test_a_new_key_answers_201_and_a_held_one_200_with_the_holder(api):
    first = submit(api, {"type": "echo", "unique_key": "report-2026-12"})
    assert first.status_code == 201, first.content
    assert first.json()["existing"] is False
    assert first.json()["unique_key"] == "report-2026-12"
    again = submit(api, {"type": "echo", "params": {"x": 1}, "unique_key": "report-2026-12"})
    assert again.status_code == 200, again.content
    assert again.json()["existing"] is True
    assert again.json()["id"] == first.json()["id"]
    assert Task.objects.count() == 1
    shown = api.get(f"/tasks/{first.json()['id']}").json()
    assert shown["unique_key"] == "report-2026-12"


def test_a_finished_holder_frees_the_key(api):
    first = submit(api, {"type": "echo", "unique_key": "k"}).json()
    Task.objects.filter(id=first["id"]).update(status=Status.COMPLETED)
    again = submit(api, {"type": "echo", "unique_key": "k"})
    assert again.status_code == 201 and again.json()["id"] != first["id"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "at least 1 character"),
        ("k" * 201, "at most 200 characters"),
        ("a\x00b", "should match pattern"),
        (7, "valid string"),
    ],
)
def test_a_bad_unique_key_is_a_422_naming_the_field(api, key, message):
    response = submit(api, {"type": "echo", "unique_key": key})
    assert response.status_code == 422, response.content
    [error] = response.json()["errors"]
    assert error["field"] == "unique_key" and message in error["message"]
    assert Task.objects.count() == 0


def test_run_now_of_a_task_whose_key_is_held_is_a_409_naming_key_and_holder(api):
    old = submit(api, {"type": "echo", "unique_key": "k"}).json()
    Task.objects.filter(id=old["id"]).update(status=Status.FAILED)
    holder = submit(api, {"type": "echo", "unique_key": "k"}).json()
    response = api.post(f"/tasks/{old['id']}/run")
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["status"] == "FAILED"
    assert "unique_key 'k'" in body["detail"] and holder["id"] in body["detail"]
    assert Task.objects.get(id=old["id"]).status == Status.FAILED


# ---------------------------------------------------------------------------------------------
# Idempotency-Key


def expire_keys(**which) -> None:
    # Before the test's transaction began, so its now() (the transaction's start) is past it.
    past = timezone.now() - timedelta(hours=1)
    IdempotencyKey.objects.filter(**which).update(created_at=past, expires_at=past)


def test_a_retried_request_gets_the_same_task_even_once_it_finished(api):
    body = {"type": "echo", "params": {"a": 1, "b": 2}}
    first = submit(api, body, key="req-1")
    assert first.status_code == 201 and first.json()["existing"] is False
    Task.objects.filter(id=first.json()["id"]).update(status=Status.COMPLETED)
    # The same request (its fields in another order) with the same key: the same task.
    retried = submit(api, {"params": {"b": 2, "a": 1}, "type": "echo"}, key="req-1")
    assert retried.status_code == 200, retried.content
    assert retried.json()["id"] == first.json()["id"]
    assert retried.json()["existing"] is True and retried.json()["status"] == "COMPLETED"
    assert Task.objects.count() == 1


def test_the_same_key_with_another_request_is_a_409_naming_the_header(api):
    assert submit(api, {"type": "echo"}, key="req-1").status_code == 201
    response = submit(api, {"type": "other"}, key="req-1")
    assert response.status_code == 409, response.content
    detail = response.json()["detail"]
    assert "Idempotency-Key header 'req-1'" in detail and "different request" in detail
    assert Task.objects.count() == 1


def test_keys_belong_to_their_caller(api, make_user):
    other_user = make_user("other", "operator")
    other = Client(
        headers={"Authorization": f"Bearer {create_token(other_user, scope='operate')[1]}"}
    )
    mine = submit(api, {"type": "echo"}, key="shared-name").json()
    theirs = submit(other, {"type": "other"}, key="shared-name")
    assert theirs.status_code == 201, theirs.content
    assert theirs.json()["id"] != mine["id"]
    assert Task.objects.count() == 2


def test_a_key_past_its_window_or_whose_task_is_gone_is_free_again(api):
    first = submit(api, {"type": "echo"}, key="req-1").json()
    expire_keys()
    expired = submit(api, {"type": "other"}, key="req-1")
    assert expired.status_code == 201, expired.content
    assert expired.json()["id"] != first["id"]
    Task.objects.filter(id=expired.json()["id"]).delete()  # as retention does
    gone = submit(api, {"type": "third"}, key="req-1")
    assert gone.status_code == 201 and gone.json()["type"] == "third"
    assert IdempotencyKey.objects.get().task_id == Task.objects.get(type="third").id


def test_a_key_with_a_unique_key_answers_the_holder_and_replays_it(api):
    holder = submit(api, {"type": "echo", "unique_key": "k"}).json()
    first = submit(api, {"type": "echo", "unique_key": "k"}, key="req-1")
    assert first.status_code == 200 and first.json()["id"] == holder["id"]
    assert (
        submit(api, {"type": "echo", "unique_key": "k"}, key="req-1").json()["id"] == holder["id"]
    )


@pytest.mark.parametrize(("key", "message"), [("", "at least 1"), ("k" * 256, "at most 255")])
def test_a_bad_idempotency_key_is_a_422_naming_the_header(api, key, message):
    response = submit(api, {"type": "echo"}, key=key)
    assert response.status_code == 422, response.content
    [error] = response.json()["errors"]
    assert error["field"] == "Idempotency-Key" and message in error["message"]


def test_expired_keys_are_pruned_with_retention(django_user_model):
    owner = django_user_model.objects.create_user("owner")
    live = idempotency.submit_once(user_id=owner.pk, key="live", spec={"type": "echo"})
    idempotency.submit_once(user_id=owner.pk, key="old", spec={"type": "echo"})
    expire_keys(key="old")
    assert idempotency.prune_expired(RetentionPolicy(batch_size=1, max_batches=5)) == 1
    # rundispatcher's supervisor runs the same round with its retention round.
    idempotency.submit_once(user_id=owner.pk, key="old", spec={"type": "echo"})
    expire_keys(key="old")
    Supervisor(SupervisorOptions(retention=RetentionPolicy()), out=lambda _: None).prune_if_due()
    assert [
        str(task_id) for task_id in IdempotencyKey.objects.values_list("task_id", flat=True)
    ] == [live.task["id"]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_request_make_one_task(api_user):
    start = threading.Barrier(20)
    answers: list[queue.Submitted] = []
    errors: list[BaseException] = []

    def retry() -> None:
        try:
            start.wait(timeout=30)
            answers.append(
                idempotency.submit_once(user_id=api_user.pk, key="req-1", spec={"type": "echo"})
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(answers) == 20
    assert Task.objects.count() == 1
    assert {answer.task["id"] for answer in answers} == {str(Task.objects.get().id)}
    assert sum(answer.created for answer in answers) == 1
