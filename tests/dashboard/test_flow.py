"""Flow control on the dashboard websocket: the window and the merging of what it holds back
(pure: no loop, no socket, no database)."""

from __future__ import annotations

from dashboard import flow, live
from dashboard.live import Batch
from tests.dashboard.conftest import told


def tasks(statuses: dict[str, str], *, overflow: bool = False, total: int | None = None):
    """A ``tasks.changed`` message's (frame, batch JSON), as the relay sends them."""
    batch = Batch(statuses, overflow, len(statuses) if total is None else total)
    message = live.tasks_message(batch)
    return message["html"], message["batch"]


def test_a_page_that_never_acks_gets_window_frames_whatever_the_burst():
    outbox = flow.Outbox(window=4)
    sent = outbox.offer_health("<health 1>")
    for n in range(10_000):
        sent += outbox.offer_tasks(*tasks({f"id-{n}": "RUNNING"}))
        if n % 1000 == 0:
            sent += outbox.offer_health(f"<health {n}>")
    assert len(sent) == 4 and outbox.in_flight == 4
    assert sent[0] == "<health 1>" and told(sent[1]).statuses == {"id-0": "RUNNING"}
    # What is held back is bounded by the frame's id limit, not by the burst.
    assert len(outbox._tasks._statuses) <= live.MAX_IDS_PER_FRAME


def test_one_ack_releases_one_merged_frame_with_the_latest_statuses():
    outbox = flow.Outbox(window=2)
    first = outbox.offer_tasks(*tasks({"a": "QUEUED"}))
    second = outbox.offer_tasks(*tasks({"b": "QUEUED"}))
    assert len(first) == len(second) == 1
    assert outbox.offer_tasks(*tasks({"a": "RUNNING", "c": "QUEUED"})) == []
    assert outbox.offer_tasks(*tasks({"a": "COMPLETED"}, total=3)) == []
    (merged,) = outbox.ack()
    batch = told(merged)
    assert batch.statuses == {"c": "QUEUED", "a": "COMPLETED"}
    assert not batch.overflow and batch.total == 5  # every change counted, none listed twice
    assert outbox.ack() == [] and outbox.in_flight == 1  # nothing else was held back


def test_held_back_changes_past_the_id_limit_become_an_overflow():
    outbox = flow.Outbox(window=1)
    outbox.offer_tasks(*tasks({"first": "QUEUED"}))
    for n in range(3):
        ids = {f"id-{n}-{k}": "QUEUED" for k in range(150)}
        assert outbox.offer_tasks(*tasks(ids)) == []
    (frame,) = outbox.ack()
    batch = told(frame)
    assert batch.overflow and batch.statuses == {} and batch.total == 450
    # An overflow already merged stays one: the page must reload whatever follows.
    outbox.offer_tasks(*tasks({"x": "RUNNING"}, overflow=True, total=9))
    outbox.offer_tasks(*tasks({"y": "RUNNING"}))
    (frame,) = outbox.ack()
    assert told(frame) == Batch({}, True, 10)


def test_only_the_newest_health_frame_is_kept():
    outbox = flow.Outbox(window=1)
    assert outbox.offer_health("<health 1>") == ["<health 1>"]
    assert outbox.offer_health("<health 2>") == []
    assert outbox.offer_health("<health 3>") == []
    assert outbox.ack() == ["<health 3>"]
    assert outbox.ack() == [] and outbox.in_flight == 0


def test_held_kinds_take_free_slots_in_turn_oldest_first():
    outbox = flow.Outbox(window=1)
    outbox.offer_health("<health 1>")
    outbox.offer_health("<health 2>")  # held first
    outbox.offer_tasks(*tasks({"a": "QUEUED"}))
    outbox.offer_health("<health 3>")  # replaces <health 2>, keeps its turn
    assert outbox.ack() == ["<health 3>"]
    outbox.offer_health("<health 4>")  # now behind the tasks
    (frame,) = outbox.ack()
    assert told(frame).statuses == {"a": "QUEUED"}
    assert outbox.ack() == ["<health 4>"]
    assert not outbox.held


def test_nothing_overtakes_what_is_held_and_extra_acks_do_not_widen_the_window():
    outbox = flow.Outbox(window=1)
    for _ in range(5):
        outbox.ack()  # acks for a previous connection
    assert outbox.in_flight == 0
    assert len(outbox.offer_tasks(*tasks({"a": "QUEUED"}))) == 1
    assert outbox.offer_tasks(*tasks({"a": "RUNNING"})) == []
    assert outbox.offer_health("<h>") == []


def test_a_batch_survives_its_json_trip_and_merges_into_a_coalescer():
    batch = Batch({"a": "QUEUED", "b": "FAILED"}, False, 7)
    assert Batch.from_json(batch.describe()) == batch
    coalescer = live.Coalescer(interval=0.0)
    coalescer.add([("b", "RUNNING"), ("c", "QUEUED")])
    coalescer.add_batch(batch)
    merged = coalescer.take()
    assert merged.statuses == {"c": "QUEUED", "a": "QUEUED", "b": "FAILED"}
    assert list(merged.statuses) == ["c", "a", "b"] and merged.total == 9
