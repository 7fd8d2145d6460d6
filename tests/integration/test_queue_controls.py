"""Pause, resume and concurrency limits, as the claim statements honour them in PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection, connections

from tasks import queue, selectors
from tasks.models import QueueControl, Task
from tasks.validation import InvalidTask

pytestmark = pytest.mark.django_db(transaction=True)


def claimed_types(rows) -> list[str]:
    return sorted(row["type"] for row in rows)


def test_a_paused_type_is_not_claimed_while_other_types_are():
    queue.enqueue_many([{"type": "resize"}] * 3 + [{"type": "echo"}] * 2)
    queue.pause("resize")

    rows = queue.claim(dispatcher="d1", batch=10)

    assert claimed_types(rows) == ["echo", "echo"]
    assert set(Task.objects.filter(type="resize").values_list("status", flat=True)) == {"QUEUED"}
    assert "capped_types" not in rows[0]  # the claim hands dispatchers the rows it always did


def test_resume_makes_the_type_claimable_again():
    queue.enqueue_many([{"type": "resize"}] * 3)
    queue.pause("resize")
    assert queue.claim(dispatcher="d1", batch=10) == []

    control = queue.resume("resize")

    assert control["paused"] is False
    assert claimed_types(queue.claim(dispatcher="d1", batch=10)) == ["resize"] * 3
    assert not QueueControl.objects.exists()  # a row that controls nothing is not kept


def test_pausing_everything_stops_every_claim_until_resumed():
    queue.enqueue_many([{"type": "resize"}, {"type": "echo"}])
    queue.set_concurrency_limit("echo", 5)
    control = queue.pause()
    assert control["type"] == "" and control["paused"] and control["paused_at"] is not None

    assert queue.claim(dispatcher="d1", batch=10) == []
    assert queue.claim(dispatcher="d1", batch=10) == []  # capped types too, on every path

    queue.resume()
    assert claimed_types(queue.claim(dispatcher="d1", batch=10)) == ["echo", "resize"]


def test_pause_keeps_its_first_time_and_running_tasks_finish():
    task = queue.enqueue(type="resize")
    [claimed] = queue.claim(dispatcher="d1", batch=1)
    first = queue.pause("resize")["paused_at"]
    assert queue.pause("resize")["paused_at"] == first  # pausing twice changes nothing

    status = queue.complete(
        task_id=task["id"], dispatcher="d1", attempt=claimed["attempts"], result={}
    )

    assert status == "COMPLETED"


def test_an_unknown_type_can_be_paused_before_its_tasks_arrive():
    queue.pause("not-yet")
    queue.enqueue(type="not-yet")
    assert queue.claim(dispatcher="d1", batch=5) == []


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "x" * 201, "\ud800"])
def test_a_type_that_no_task_could_have_is_refused(bad):
    with pytest.raises(InvalidTask) as caught:
        queue.pause(bad)
    assert "type" in caught.value.errors
    assert not QueueControl.objects.exists()


@pytest.mark.parametrize("bad", [0, -1, 100_001, 2.5, True, "3"])
def test_a_limit_must_be_a_positive_whole_number(bad):
    with pytest.raises(InvalidTask) as caught:
        queue.set_concurrency_limit("resize", bad)
    assert "limit" in caught.value.errors


def test_a_capped_type_runs_no_more_than_its_limit_per_claim_and_across_claims():
    queue.enqueue_many([{"type": "resize"}] * 5 + [{"type": "echo"}] * 3)
    queue.set_concurrency_limit("resize", 2)

    first = queue.claim(dispatcher="d1", batch=10)
    second = queue.claim(dispatcher="d2", batch=10)

    assert claimed_types(first) == ["echo"] * 3 + ["resize"] * 2
    assert second == []
    done = next(row for row in first if row["type"] == "resize")
    queue.complete(task_id=done["id"], dispatcher="d1", attempt=done["attempts"], result={})
    assert claimed_types(queue.claim(dispatcher="d2", batch=10)) == ["resize"]


def test_the_operators_limit_wins_over_the_declared_one_and_clearing_it_restores_it():
    queue.enqueue_many([{"type": "resize"}] * 6)
    queue.declare_concurrency({"resize": 1})
    assert selectors.queue_control("resize")["limit"] == 1
    queue.set_concurrency_limit("resize", 3)
    assert selectors.queue_control("resize")["limit"] == 3
    assert len(queue.claim(dispatcher="d1", batch=10)) == 3

    queue.set_concurrency_limit("resize", None)

    assert selectors.queue_control("resize")["limit"] == 1  # the declared limit holds again
    assert queue.claim(dispatcher="d1", batch=10) == []


def test_a_type_that_stops_declaring_a_limit_loses_it_but_keeps_its_pause():
    queue.declare_concurrency({"resize": 2, "echo": 4})
    queue.pause("echo")
    queue.declare_concurrency({"resize": 3})
    assert selectors.queue_control("resize")["declared_concurrency"] == 3
    echo = selectors.queue_control("echo")
    assert echo["declared_concurrency"] is None and echo["paused"] is True


def test_a_busy_queue_of_other_types_does_not_starve_a_capped_type():
    # Each claim's batch is filled by uncapped work alone; capped tasks still get their slots.
    queue.enqueue_many([{"type": "echo"}] * 50)
    queue.enqueue_many([{"type": "resize", "priority": -5}] * 2)
    queue.set_concurrency_limit("resize", 1)
    claimed = queue.claim(dispatcher="d1", batch=10) + queue.claim(dispatcher="d1", batch=10)
    assert "resize" in claimed_types(claimed)
    assert len(claimed) <= 20


# ---------------------------------------------------------------------------------------------
# The limit under concurrent claims


LIMIT = 2
DISPATCHERS = 4
CAPPED_TASKS = 16


def _dispatch_until_done(name: str, start: threading.Barrier, errors: list) -> None:
    """One dispatcher on its own connection: claim, "run" a short while, complete."""
    try:
        start.wait(timeout=30)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3:
            rows = queue.claim(dispatcher=name, batch=3)
            if not rows:
                time.sleep(0.01)
                continue
            idle_since = time.monotonic()
            time.sleep(0.05)
            queue.complete_many(
                dispatcher=name, results=[(row["id"], row["attempts"], {}) for row in rows]
            )
    except Exception as exc:  # reported to the test
        errors.append(exc)
    finally:
        connections.close_all()


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start comes
    first: that slot was free again)."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_max_overlap_counts_what_runs_at_once():
    t = datetime(2030, 1, 1, tzinfo=UTC)
    s = timedelta(seconds=1)
    assert max_overlap([(t, t + 2 * s), (t + s, t + 3 * s), (t + 2 * s, t + 4 * s)]) == 2
    assert max_overlap([(t, t + 5 * s)] * 3) == 3


@pytest.mark.slow
def test_a_limit_of_two_holds_under_four_dispatchers_claiming_at_once():
    queue.enqueue_many([{"type": "capped"}] * CAPPED_TASKS + [{"type": "free"}] * 12)
    queue.set_concurrency_limit("capped", LIMIT)
    start = threading.Barrier(DISPATCHERS)
    errors: list = []
    threads = [
        threading.Thread(target=_dispatch_until_done, args=(f"d{n}", start, errors))
        for n in range(DISPATCHERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors

    rows = list(Task.objects.filter(type="capped").values("status", "locked_at", "updated_at"))
    assert {row["status"] for row in rows} == {"COMPLETED"}
    intervals = [(row["locked_at"], row["updated_at"]) for row in rows]
    # Reached, so the test could fail; never exceeded, whatever the interleaving.
    assert max_overlap(intervals) == LIMIT
    free = Task.objects.filter(type="free").values("locked_at", "updated_at")
    assert max_overlap([(r["locked_at"], r["updated_at"]) for r in free]) > LIMIT


# ---------------------------------------------------------------------------------------------
# Resume wakes the dispatchers


def test_resume_notifies_the_channel_dispatchers_listen_on(test_database_url):
    queue.pause("resize")
    with psycopg.connect(test_database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        queue.resume("resize")
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [queue.WAKE_PAYLOAD]


def test_the_dispatchers_waker_wakes_on_a_resume():
    from organism.waker import NotifyWaker

    waker = NotifyWaker()
    waker._notified(queue.WAKE_PAYLOAD)
    assert waker._claimable.is_set()


# ---------------------------------------------------------------------------------------------
# Why a task waits


def test_waiting_reasons():
    later = datetime.now(UTC) + timedelta(hours=1)
    paused = queue.enqueue(type="resize")
    due = queue.enqueue(type="echo", run_after=later)
    capped = queue.enqueue(type="mail")
    queue.set_concurrency_limit("mail", 1)
    queue.enqueue(type="mail")
    queue.pause("resize")
    queue.claim(dispatcher="d1", batch=10)  # one mail runs; echo is not due

    assert selectors.waiting_reason(selectors.get_task(paused["id"])) == "type resize is paused"
    assert selectors.waiting_reason(selectors.get_task(due["id"])).startswith("due at ")
    waiting_mail = Task.objects.get(type="mail", status="QUEUED")
    assert selectors.waiting_reason(selectors.get_task(waiting_mail.id)) == (
        "type mail is at its concurrency limit (1 of 1 running)"
    )
    assert selectors.waiting_reason(selectors.get_task(capped["id"])) is None  # it runs

    queue.pause()
    assert selectors.waiting_reason(selectors.get_task(due["id"])) == "all claiming is paused"


def test_queue_overview_lists_controlled_running_and_waiting_types():
    queue.enqueue_many([{"type": "echo"}, {"type": "resize"}])
    queue.pause("later")
    queue.set_concurrency_limit("resize", 2)
    queue.claim(dispatcher="d1", batch=1)

    overview = selectors.queue_overview()

    by_type = {row["type"]: row for row in overview["types"]}
    assert set(by_type) == {"echo", "later", "resize"}
    assert by_type["later"]["paused"] and by_type["resize"]["limit"] == 2
    assert sum(row["running"] for row in overview["types"]) == 1
    assert overview["all_paused"] is False


def test_the_claim_stays_one_statement_without_controls(django_assert_max_num_queries):
    queue.enqueue_many([{"type": "echo"}] * 20)
    connection._seedcore_capped_types = True
    queue.claim(dispatcher="d1", batch=5)  # sees that no type is capped
    with django_assert_max_num_queries(1):
        assert len(queue.claim(dispatcher="d1", batch=5)) == 5


def test_rundispatcher_records_the_limits_handlers_declare(monkeypatch):
    from organism import handlers, supervisor

    monkeypatch.setattr(handlers, "_registry", dict(handlers._registry))
    handlers.handler("unit_capped", concurrency=2)(lambda params, ctx: None)
    queue.declare_concurrency({"gone": 5})  # declared by a handler that no longer exists

    supervisor.declare_concurrency()

    assert selectors.queue_control("unit_capped")["declared_concurrency"] == 2
    assert selectors.queue_control("gone")["limit"] is None
    assert handlers.declared_concurrency() == {"unit_capped": 2}


def test_the_claim_still_reads_the_claimable_index_with_types_paused():
    # Written as `type <> ALL (array)` the planner thought the filter kept no row and scanned
    # and sorted the whole table on every claim.
    queue.enqueue_many([{"type": "echo"}] * 2000)
    queue.pause("resize")
    queue.set_concurrency_limit("mail", 2)
    sql = queue.claim_statement()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks")
        cursor.execute("EXPLAIN " + sql, [50, "d1", 90])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "tasks_claimable_idx" in plan, plan


# ---------------------------------------------------------------------------------------------
# Types no agent can take now (rundispatcher's holds)

NEEDS_GPU = "needs 1 GPU; the cluster has 0 of 0 free; 1 agent pending placement"


def test_a_held_type_stays_queued_with_attempts_unchanged_while_others_flow():
    embeds = queue.enqueue_many([{"type": "embed"}] * 2)
    queue.enqueue_many([{"type": "echo"}] * 2)
    assert queue.set_waiting_for({"embed": NEEDS_GPU}) is True
    assert queue.set_waiting_for({"embed": NEEDS_GPU}) is False  # nothing changed: no write

    assert claimed_types(queue.claim(dispatcher="d1", batch=10)) == ["echo", "echo"]
    for task_id in embeds:
        task = selectors.get_task(task_id)
        assert (task["status"], task["attempts"]) == ("QUEUED", 0)
        assert selectors.waiting_reason(task) == NEEDS_GPU
    assert selectors.queue_control("embed")["waiting_for"] == NEEDS_GPU

    assert queue.set_waiting_for({}) is True  # a GPU agent was placed
    assert not QueueControl.objects.filter(type="embed").exists()  # nothing left to hold
    assert claimed_types(queue.claim(dispatcher="d1", batch=10)) == ["embed", "embed"]


def test_a_hold_keeps_a_paused_or_capped_row_and_skips_a_capped_type():
    queue.enqueue_many([{"type": "mail"}] * 2)
    queue.set_concurrency_limit("mail", 5)
    queue.set_waiting_for({"mail": NEEDS_GPU})
    assert queue.claim(dispatcher="d1", batch=10) == []  # the capped claim skips it too
    queue.set_concurrency_limit("mail", None)  # clearing the cap keeps the hold's row
    assert selectors.queue_control("mail")["waiting_for"] == NEEDS_GPU
    queue.set_waiting_for({})
    assert len(queue.claim(dispatcher="d1", batch=10)) == 2


FULL = "organ burst is at its max_agents (2) with every agent busy (2 running, 1 per agent)"


def test_a_full_organ_is_what_its_queued_tasks_say_but_they_are_still_claimed():
    (burst,) = queue.enqueue_many([{"type": "burst"}])
    assert queue.set_organ_full({"burst": FULL}) is True
    assert queue.set_organ_full({"burst": FULL}) is False  # nothing changed: no write
    assert selectors.waiting_reason(selectors.get_task(burst)) == FULL
    # Both notes on one type: the hold (nothing can take it at all) is what it says.
    queue.set_waiting_for({"burst": NEEDS_GPU})
    assert selectors.waiting_reason(selectors.get_task(burst)) == NEEDS_GPU
    queue.set_waiting_for({})
    assert QueueControl.objects.filter(type="burst").exists()  # the full note keeps the row
    assert claimed_types(queue.claim(dispatcher="d1", batch=10)) == ["burst"]
    assert queue.set_organ_full({}) is True
    assert not QueueControl.objects.filter(type="burst").exists()


def test_backlog_by_type_counts_due_waiting_and_running_tasks():
    later = datetime.now(UTC) + timedelta(hours=1)
    queue.enqueue_many([{"type": "embed"}] * 3 + [{"type": "echo"}])
    queue.enqueue(type="embed", run_after=later)  # not due: not backlog yet
    queue.pause("echo")
    queue.claim(dispatcher="d1", batch=1)  # one embed RUNNING
    queue.enqueue(type="done")
    Task.objects.filter(type="done").update(status="COMPLETED")

    assert selectors.backlog_by_type() == {"embed": 3, "echo": 1}
    assert selectors.backlog_by_type(scan=1) == {"embed": 2}  # 1 due read + 1 RUNNING
