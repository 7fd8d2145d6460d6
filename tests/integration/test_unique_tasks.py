"""Unique tasks: at most one unfinished task per ``unique_key``, kept by PostgreSQL itself."""

from __future__ import annotations

import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, transaction

from tasks import queue, selectors
from tasks.models import Status, Task

pytestmark = pytest.mark.django_db

SUBMITTERS = 50


def _finish(task_id: str, status: str) -> None:
    Task.objects.filter(id=task_id).update(status=status)


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_of_one_key_make_one_task():
    start = threading.Barrier(SUBMITTERS)
    answers: list[queue.Submitted] = []
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            start.wait(timeout=30)  # every thread holds its own connection, then all submit
            answers.append(queue.submit(type="echo", unique_key="nightly-report"))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(answers) == SUBMITTERS
    assert Task.objects.filter(unique_key="nightly-report").count() == 1
    only = Task.objects.get(unique_key="nightly-report")
    assert {answer.task["id"] for answer in answers} == {str(only.id)}
    assert sum(answer.created for answer in answers) == 1


def test_a_held_key_returns_the_unfinished_holder():
    first = queue.submit(type="echo", params={"n": 1}, unique_key="k")
    again = queue.submit(type="echo", params={"n": 2}, unique_key="k")
    assert first.created and not again.created
    assert again.task["id"] == first.task["id"]
    assert again.task["params"] == {"n": 1}  # the holder as it is, not the new request
    assert queue.enqueue(type="echo", unique_key="k")["id"] == first.task["id"]


@pytest.mark.parametrize("status", [Status.RETRY, Status.RUNNING])
def test_retry_and_running_tasks_hold_their_key(status):
    holder = queue.submit(type="echo", unique_key="k").task
    _finish(holder["id"], status)
    assert queue.submit(type="echo", unique_key="k").task["id"] == holder["id"]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_a_finished_holder_frees_the_key(status):
    old = queue.submit(type="echo", unique_key="k").task
    _finish(old["id"], status)
    new = queue.submit(type="echo", unique_key="k")
    assert new.created and new.task["id"] != old["id"]
    assert new.task["unique_key"] == "k"


def test_tasks_without_a_key_are_never_deduplicated():
    ids = {queue.submit(type="echo").task["id"] for _ in range(3)}
    assert len(ids) == 3


def test_plain_sql_inserts_are_held_to_the_rule():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO tasks (type, unique_key) VALUES ('echo', 'sql-key')")
        with (
            pytest.raises(IntegrityError, match="tasks_unique_key_unfinished"),
            transaction.atomic(),
        ):
            cursor.execute("INSERT INTO tasks (type, unique_key) VALUES ('echo', 'sql-key')")
        cursor.execute("UPDATE tasks SET status = 'COMPLETED' WHERE unique_key = 'sql-key'")
        cursor.execute("INSERT INTO tasks (type, unique_key) VALUES ('echo', 'sql-key')")
    assert Task.objects.filter(unique_key="sql-key").count() == 2


def test_enqueue_many_applies_the_rule_to_each_spec():
    held = queue.submit(type="echo", unique_key="a").task["id"]
    ids = queue.enqueue_many(
        [
            {"type": "echo", "unique_key": "a"},  # held by an older task
            {"type": "echo", "unique_key": "b"},
            {"type": "echo", "unique_key": "b"},  # held by the spec before it
            {"type": "echo"},
        ]
    )
    assert ids[0] == held
    assert ids[1] == ids[2] != held
    assert len(set(ids)) == 3
    assert Task.objects.count() == 3


@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED])
def test_run_now_refuses_while_another_task_holds_the_key(status):
    old = queue.submit(type="echo", unique_key="k").task
    _finish(old["id"], status)
    holder = queue.submit(type="echo", unique_key="k").task
    with pytest.raises(queue.UniqueKeyTaken) as refused:
        queue.run_now(old["id"])
    assert refused.value.holder_id == holder["id"]
    assert refused.value.status == status
    assert "'k'" in str(refused.value) and holder["id"] in str(refused.value)
    assert selectors.get_task(old["id"])["status"] == status  # unchanged
    assert isinstance(refused.value, queue.TransitionNotAllowed)  # so every caller refuses it


def test_run_now_of_the_holder_itself_and_after_the_holder_finished():
    task = queue.submit(type="echo", unique_key="k").task
    _finish(task["id"], Status.RETRY)
    assert queue.run_now(task["id"])["status"] == Status.QUEUED  # it holds its own key
    other = queue.submit(type="echo", unique_key="other").task
    _finish(other["id"], Status.FAILED)
    assert queue.run_now(other["id"])["status"] == Status.QUEUED  # nobody holds "other"


def test_retry_all_matching_skips_what_would_hold_a_key_twice():
    """A bulk retry leaves a task whose key an unfinished task holds, and all but one of the
    batch's tasks sharing a free key, and counts them as skipped: it never fails the batch."""
    from tasks import bulk

    held = queue.submit(type="job", unique_key="held").task
    _finish(held["id"], Status.FAILED)
    holder = queue.submit(type="job", unique_key="held").task  # unfinished, holds "held"
    twins = []
    for _ in range(2):  # each fails before the next is submitted, freeing "twin" for it
        twins.append(queue.submit(type="job", unique_key="twin").task)
        _finish(twins[-1]["id"], Status.FAILED)
    free = queue.submit(type="job").task
    _finish(free["id"], Status.FAILED)

    done = bulk.start("retry", selectors.TaskFilter(type="job", status=Status.FAILED))
    assert (done.state, done.total, done.done, done.skipped) == ("finished", 4, 2, 2)
    statuses = {t["id"]: selectors.get_task(t["id"])["status"] for t in [held, *twins, free]}
    assert statuses[held["id"]] == Status.FAILED
    assert sorted(statuses[t["id"]] for t in twins) == [Status.FAILED, Status.QUEUED]
    assert statuses[free["id"]] == Status.QUEUED
    assert selectors.get_task(holder["id"])["status"] == Status.QUEUED


def test_release_and_reap_of_a_holder_keep_its_key():
    """The other ways back to QUEUED or RETRY start from RUNNING, a status that already holds
    the key, so they can never meet another holder."""
    task = queue.submit(type="echo", unique_key="k").task
    [claimed] = queue.claim(dispatcher="d1", batch=1)
    assert queue.release(dispatcher="d1", attempts={task["id"]: claimed["attempts"]})
    [claimed] = queue.claim(dispatcher="d1", batch=1, lease_seconds=-1)
    [reaped] = queue.reap(heartbeat_timeout=3600)
    assert reaped["status"] == Status.RETRY
    assert queue.submit(type="echo", unique_key="k").task["id"] == task["id"]


# ---------------------------------------------------------------------------------------------
# manage.py tasks submit --unique-key


def _cli(*args: str) -> str:
    out = io.StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue().strip()


def test_cli_submit_says_whether_the_task_is_new_or_existing():
    first = _cli("submit", "echo", "--unique-key", "nightly")
    task_id = first.split()[0]
    assert first.endswith("queued: QUEUED")
    again = _cli("submit", "echo", "--unique-key", "nightly")
    assert again.split()[0] == task_id
    assert "existing, not queued again" in again and "'nightly'" in again
    as_json = json.loads(_cli("submit", "echo", "--unique-key", "nightly", "--json"))
    assert as_json["id"] == task_id and as_json["existing"] is True
    assert as_json["unique_key"] == "nightly"
    assert Task.objects.count() == 1


@pytest.mark.parametrize(("key", "message"), [("", "at least 1"), ("k" * 201, "at most 200")])
def test_cli_refuses_a_bad_unique_key_naming_the_option(key, message):
    with pytest.raises(CommandError, match=f"--unique-key: .*{message}"):
        _cli("submit", "echo", "--unique-key", key)
    assert not Task.objects.exists()


def test_cli_run_of_a_task_whose_key_is_held_says_which_task_holds_it():
    old = queue.submit(type="echo", unique_key="k").task
    _finish(old["id"], Status.FAILED)
    holder = queue.submit(type="echo", unique_key="k").task
    with pytest.raises(CommandError, match=f"held by unfinished task {holder['id']}"):
        _cli("run", old["id"])
