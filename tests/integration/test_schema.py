"""The tasks table as other programs see it: database defaults, the updated_at trigger, and
the NOTIFY every insert and status change sends."""

import json
import time
import uuid

import pytest
from django.db import connection

from tasks import queue, selectors


def _insert_raw(type_: str = "echo") -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO tasks (type) VALUES (%s)", [type_])


@pytest.mark.django_db(transaction=True)
def test_a_raw_insert_with_only_a_type_is_queued_with_defaults_and_claimable():
    _insert_raw("echo")
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM tasks")
        (raw_id,) = cursor.fetchone()
    task = selectors.get_task(str(uuid.UUID(str(raw_id))))
    assert task["status"] == "QUEUED"
    assert task["attempts"] == 0
    assert task["priority"] == 0
    assert task["drift_score"] == 0
    assert task["params"] == {}
    assert task["error_history"] == []
    assert task["cancel_requested"] is False
    assert task["created_at"] is not None and task["updated_at"] is not None

    claimed = queue.claim(dispatcher="d1", batch=10)
    assert [row["id"] for row in claimed] == [task["id"]]
    assert claimed[0]["status"] == "RUNNING"


@pytest.mark.django_db(transaction=True)
def test_the_trigger_stamps_updated_at_on_a_raw_update():
    task = queue.enqueue(type="echo")
    time.sleep(0.05)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tasks SET description = %s WHERE type = %s", ["edited by psql", "echo"]
        )
    after = selectors.get_task(task["id"])
    assert after["description"] == "edited by psql"
    assert after["updated_at"] > task["updated_at"]


@pytest.mark.django_db(transaction=True)
def test_the_status_check_constraint_refuses_unknown_statuses():
    from django.db import IntegrityError, transaction

    queue.enqueue(type="echo")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE tasks SET status = 'DONE'")


def _listen():
    """A separate psycopg connection LISTENing on the queue's channel."""
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    listener = psycopg.connect(**params, autocommit=True)
    listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
    return listener


def _payloads(listener, wanted: int) -> list:
    rows = []
    deadline = time.monotonic() + 5
    while len(rows) < wanted and time.monotonic() < deadline:
        for notice in listener.notifies(timeout=0.5, stop_after=1):
            rows += json.loads(notice.payload)
    return rows


@pytest.mark.django_db(transaction=True)
def test_every_insert_and_status_change_sends_a_notify():
    listener = _listen()
    try:
        task = queue.enqueue(type="echo")
        assert _payloads(listener, 1) == [[task["id"], "QUEUED", "echo"]]

        queue.claim(dispatcher="d1", batch=1)
        assert _payloads(listener, 1) == [[task["id"], "RUNNING", "echo"]]

        queue.complete(task_id=task["id"], dispatcher="d1", attempt=1, result={"ok": True})
        assert _payloads(listener, 1) == [[task["id"], "COMPLETED", "echo"]]

        # An update that leaves the status alone announces nothing.
        with connection.cursor() as cursor:
            cursor.execute("UPDATE tasks SET description = 'x'")
        assert _payloads(listener, 1) == []
    finally:
        listener.close()


@pytest.mark.django_db(transaction=True)
def test_bulk_insert_notifications_stay_under_the_payload_limit():
    listener = _listen()
    try:
        ids = queue.enqueue_many([{"type": "t" * 300} for _ in range(300)])
        rows = _payloads(listener, 300)
        assert sorted(row[0] for row in rows) == sorted(ids)
        assert {row[2] for row in rows} == {"t" * 100}
    finally:
        listener.close()
