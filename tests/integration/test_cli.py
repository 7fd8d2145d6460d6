"""`manage.py tasks`: every action, table and JSON output, and the CommandErrors."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command

from tasks import queue, selectors
from tasks.models import Task

pytestmark = pytest.mark.django_db


def tasks(*args: str) -> str:
    out = io.StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue()


def tasks_json(*args: str):
    return json.loads(tasks(*args, "--json"))


def test_submit_queues_a_task_with_every_option():
    out = tasks(
        "submit",
        "echo",
        "--params",
        '{"a": [1, 2]}',
        "--description",
        "from the CLI",
        "--domain",
        "analysis",
        "--drift-score",
        "0.25",
        "--priority",
        "3",
    )
    task_id = out.split()[0]
    assert out.strip().endswith("queued: QUEUED")
    task = selectors.get_task(task_id)
    assert task["params"] == {"a": [1, 2]} and task["description"] == "from the CLI"
    assert task["domain"] == "analysis" and task["drift_score"] == 0.25
    assert task["priority"] == 3 and task["status"] == "QUEUED"


def test_submit_json_prints_the_task():
    task = tasks_json("submit", "test")
    assert task["type"] == "test" and task["status"] == "QUEUED"
    assert selectors.get_task(task["id"])["type"] == "test"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "{oops"], "--params is not valid JSON"),
        (["--params", "[1]"], "--params: Input should be a valid dictionary"),
        (["--drift-score", "1.5"], "--drift-score"),
        (["--drift-score", "nan"], "--drift-score"),
        (["--description", "x" * 10_001], "--description"),
    ],
)
def test_submit_refuses_bad_input_saying_which_option(args, message):
    with pytest.raises(CommandError, match=message):
        tasks("submit", "echo", *args)
    assert not Task.objects.exists()


def test_list_prints_a_table_newest_first():
    first = queue.enqueue(type="echo", description="first")["id"]
    second = queue.enqueue(type="test", description="second " + "x" * 60)["id"]
    Task.objects.filter(id=first).update(created_at="2024-01-01T00:00:00Z")
    lines = tasks("list").splitlines()
    assert lines[0].split() == ["ID", "STATUS", "TYPE", "ATTEMPTS", "CREATED_AT", "DESCRIPTION"]
    assert lines[1].startswith(second[:8]) and "…" in lines[1]
    assert lines[2].startswith(first[:8]) and lines[2].endswith("first")


def test_list_filters_and_pages():
    for _ in range(3):
        queue.enqueue(type="echo")
    queue.enqueue(type="test")
    page = tasks_json("list", "--type", "echo", "--limit", "2")
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = tasks_json("list", "--type", "echo", "--limit", "2", "--cursor", page["next_cursor"])
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert "more: manage.py tasks list --cursor" in tasks("list", "--limit", "1")
    assert "(no tasks)" in tasks("list", "--status", "FAILED")


def test_show_and_status_take_a_short_id():
    task_id = queue.enqueue(type="echo", params={"k": "v"})["id"]
    shown = tasks("show", task_id[:6])
    assert f"id: {task_id}" in shown and '"k": "v"' in shown
    assert tasks_json("show", task_id[:6])["params"] == {"k": "v"}
    status = tasks_json("status", task_id[:5])
    assert status["id"] == task_id and status["status"] == "QUEUED" and status["attempts"] == 0
    assert set(status) == {"id", "status", "attempts", "updated_at", "error"}
    table = tasks("status", task_id).splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "ATTEMPTS"]
    assert table[1].startswith(task_id[:8]) and "QUEUED" in table[1]


def test_cancel_then_run():
    task_id = queue.enqueue(type="echo")["id"]
    assert tasks("cancel", task_id[:8]).strip() == f"{task_id} cancelled: CANCELLED"
    assert selectors.get_task(task_id)["status"] == "CANCELLED"
    assert tasks_json("run", task_id[:8])["status"] == "QUEUED"
    assert selectors.get_task(task_id)["status"] == "QUEUED"


def test_cancel_of_a_running_task_is_a_request():
    task_id = queue.enqueue(type="sleep")["id"]
    queue.claim(dispatcher="d-cli", batch=1)
    assert "cancel requested: RUNNING" in tasks("cancel", task_id)


def test_a_forbidden_transition_names_the_status():
    task_id = queue.enqueue(type="echo")["id"]
    queue.claim(dispatcher="d-cli", batch=1)
    queue.complete(task_id=task_id, dispatcher="d-cli", attempt=1, result=None)
    with pytest.raises(CommandError, match="cannot cancel .* it is COMPLETED"):
        tasks("cancel", task_id)
    with pytest.raises(CommandError, match="cannot run .* it is COMPLETED"):
        tasks("run", task_id)


@pytest.mark.parametrize("action", ["show", "status", "run", "cancel"])
def test_id_errors_say_what_to_do(action):
    Task.objects.create(id=uuid.UUID("cafe0000-0000-4000-8000-000000000001"), type="echo")
    Task.objects.create(id=uuid.UUID("cafe0000-0000-4000-8000-000000000002"), type="echo")
    with pytest.raises(CommandError, match="matches several tasks: cafe0000-.*tasks list"):
        tasks(action, "cafe")
    with pytest.raises(CommandError, match="no task matches ID 'beef'"):
        tasks(action, "beef")
    with pytest.raises(CommandError, match="not a task ID"):
        tasks(action, "zzzz")


def test_bad_list_options():
    with pytest.raises(CommandError, match="--limit must be between 1 and 500"):
        tasks("list", "--limit", "0")
    with pytest.raises(CommandError, match="cursor is malformed"):
        tasks("list", "--cursor", "@@@")
    with pytest.raises(CommandError, match="not a task ID"):
        tasks("list", "--id", "xyz")


# -- the queue's controls -----------------------------------------------------------------


def test_pause_and_resume_a_type_and_everything():
    queue.enqueue(type="resize")
    assert tasks("pause", "resize").strip() == "type resize paused"
    assert queue.claim(dispatcher="d1", batch=5) == []
    listing = tasks("queue")
    assert "resize" in listing and "paused" in listing

    assert tasks("resume", "resize").strip() == "type resize resumed"
    assert tasks("pause").strip() == "all types paused"
    assert tasks("queue").startswith("ALL CLAIMING PAUSED since ")
    assert queue.claim(dispatcher="d1", batch=5) == []
    assert tasks("resume").strip() == "all types resumed"
    assert [row["type"] for row in queue.claim(dispatcher="d1", batch=5)] == ["resize"]


def test_an_unknown_type_may_be_paused_before_its_tasks_arrive():
    tasks("pause", "not-yet")
    assert selectors.queue_control("not-yet")["paused"] is True


@pytest.mark.parametrize("bad", ["", "  ", "a\x00b", "x" * 201])
def test_pause_refuses_a_type_no_task_could_have(bad):
    with pytest.raises(CommandError, match="type: "):
        tasks("pause", bad)
    assert selectors.queue_state().anything_paused is False


def test_limit_sets_and_clears_a_cap():
    assert tasks("limit", "resize", "2").strip() == "type resize: at most 2 running at once"
    assert tasks_json("queue")["types"][0]["limit"] == 2
    assert tasks("limit", "resize", "none").strip() == "type resize: no concurrency limit"
    for bad in ("0", "-1", "two"):
        with pytest.raises(CommandError):
            tasks("limit", "resize", bad)
