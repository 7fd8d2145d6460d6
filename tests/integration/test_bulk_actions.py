"""Cancel or retry every task a filter matches (tasks.bulk): batches, the snapshot bound,
tasks that change meanwhile, an interrupted action resumed, and the background thread."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks import bulk, queue, selectors
from tasks.models import BulkAction, Status, Task
from tasks.selectors import TaskFilter

pytestmark = pytest.mark.django_db(transaction=True)


def insert_tasks(n: int, *, params: str = "jsonb_build_object('customer', mod(g, 2))") -> None:
    """``n`` QUEUED tasks in one statement; customer 0 and 1 alternate."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO tasks (type, params) SELECT 'echo', {params} "
            "FROM generate_series(1, %s) AS g",
            [n],
        )


def statuses(**where) -> dict[str, int]:
    counts = {}
    for status in Task.objects.filter(**where).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_cancel_all_matching_ten_thousand_tasks_in_batches():
    insert_tasks(20_000)
    started = bulk.start("cancel", TaskFilter(params={"customer": 1}), requested_by="op")
    assert (started.state, started.total, started.done, started.skipped) == (
        "finished",
        10_000,
        10_000,
        0,
    )
    assert statuses(params__customer=1) == {"CANCELLED": 10_000}
    assert statuses(params__customer=0) == {"QUEUED": 10_000}
    assert started.requested_by == "op" and started.finished_at is not None


def test_batches_are_bounded_and_the_cursor_advances(settings):
    insert_tasks(1_000)
    task_filter = TaskFilter(type="echo")
    total, snapshot_at = bulk.count(task_filter)
    row = BulkAction.objects.create(
        action="cancel", filter=task_filter.describe(), snapshot_at=snapshot_at, total=total
    )
    after_one = bulk.run(row.pk, batch_size=300, max_batches=1)
    assert (after_one.state, after_one.done, after_one.skipped) == ("running", 300, 0)
    assert statuses() == {"CANCELLED": 300, "QUEUED": 700}
    # The 300 cancelled are the oldest, in (created_at, id) order: the cursor's side.
    first = Task.objects.order_by("created_at", "id")[299]
    assert (after_one.cursor_created_at, str(after_one.cursor_id)) == (
        first.created_at,
        str(first.id),
    )
    finished = bulk.run(row.pk, batch_size=300)
    assert (finished.state, finished.done, finished.skipped) == ("finished", 1_000, 0)


def test_tasks_created_after_the_confirmation_are_left_alone():
    insert_tasks(10)
    total, snapshot_at = bulk.count(TaskFilter(type="echo"))
    time.sleep(0.01)
    insert_tasks(5)  # queued after the operator confirmed
    started = bulk.start("cancel", TaskFilter(type="echo"), snapshot_at=snapshot_at)
    assert (total, started.total, started.done) == (10, 10, 10)
    assert statuses() == {"CANCELLED": 10, "QUEUED": 5}


def test_a_snapshot_in_the_future_is_cut_to_now():
    started = bulk.start(
        "cancel", TaskFilter(type="echo"), snapshot_at=timezone.now() + timedelta(days=1)
    )
    assert started.snapshot_at <= timezone.now()


def test_tasks_whose_status_changed_since_the_confirmation_are_skipped_not_corrupted():
    insert_tasks(6)
    task_filter = TaskFilter(status=Status.QUEUED)
    total, snapshot_at = bulk.count(task_filter)
    row = BulkAction.objects.create(
        action="cancel", filter=task_filter.describe(), snapshot_at=snapshot_at, total=total
    )
    oldest = Task.objects.order_by("created_at", "id").first()
    Task.objects.filter(id=oldest.id).update(status=Status.COMPLETED, result={"ok": 1})
    finished = bulk.run(row.pk)
    # Counted when accepted, then no longer QUEUED: reported as skipped, left as it is.
    assert (total, finished.done, finished.skipped) == (6, 5, 1)
    row = Task.objects.get(id=oldest.id)
    assert (row.status, row.result) == (Status.COMPLETED, {"ok": 1})


def test_a_task_completed_while_its_batch_waits_for_the_lock_is_skipped():
    insert_tasks(3)
    target = Task.objects.order_by("created_at", "id").first()
    locked, release = threading.Event(), threading.Event()

    def complete_it_slowly():
        from django.db import connections, transaction

        try:
            with transaction.atomic():
                Task.objects.select_for_update().get(id=target.id)
                locked.set()
                release.wait(10)
                Task.objects.filter(id=target.id).update(status=Status.COMPLETED)
        finally:
            connections.close_all()

    holder = threading.Thread(target=complete_it_slowly)
    holder.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()
    started = bulk.start("cancel", TaskFilter(type="echo"))  # waits for the lock
    holder.join(10)
    assert (started.total, started.done, started.skipped) == (3, 2, 1)
    assert Task.objects.get(id=target.id).status == Status.COMPLETED
    assert statuses() == {"COMPLETED": 1, "CANCELLED": 2}


def test_cancel_of_running_tasks_asks_them_to_stop_as_a_single_cancel_does():
    insert_tasks(4)
    claimed = queue.claim(dispatcher="d1", batch=2)
    finished = queue.enqueue(type="echo")
    Task.objects.filter(id=finished["id"]).update(status=Status.COMPLETED)
    started = bulk.start("cancel", TaskFilter(type="echo"))
    assert (started.total, started.done, started.skipped) == (5, 4, 1)
    for task in claimed:
        row = selectors.get_task(task["id"])
        assert (row["status"], row["cancel_requested"]) == ("RUNNING", True)
    assert statuses() == {"RUNNING": 2, "CANCELLED": 2, "COMPLETED": 1}


def test_retry_all_matching_runs_failed_tasks_now_with_fresh_attempts():
    insert_tasks(4)
    Task.objects.update(status=Status.FAILED, attempts=5, error="boom")
    Task.objects.filter(id__in=Task.objects.order_by("created_at").values("id")[:1]).update(
        status=Status.COMPLETED
    )
    started = bulk.start("retry", TaskFilter(error="BOOM"))
    assert (started.total, started.done, started.skipped) == (4, 3, 1)
    queued = Task.objects.filter(status=Status.QUEUED).values_list("attempts", "error")
    assert list(queued) == [(0, None)] * 3


def test_an_interrupted_action_resumes_where_it_stopped():
    insert_tasks(1_000)
    task_filter = TaskFilter(type="echo")
    total, snapshot_at = bulk.count(task_filter)
    row = BulkAction.objects.create(
        action="cancel", filter=task_filter.describe(), snapshot_at=snapshot_at, total=total
    )
    bulk.run(row.pk, batch_size=400, max_batches=1)  # then its process died
    with pytest.raises(bulk.NotInterrupted):
        bulk.resume(row.pk)  # still fresh: another runner may be at work
    BulkAction.objects.filter(pk=row.pk).update(
        updated_at=timezone.now() - bulk.STALE_AFTER - timedelta(seconds=1)
    )
    assert bulk.progress(bulk.get(row.pk))["state"] == "interrupted"
    resumed = bulk.resume(row.pk)
    assert (resumed.state, resumed.done, resumed.skipped) == ("finished", 1_000, 0)
    assert statuses() == {"CANCELLED": 1_000}
    with pytest.raises(bulk.NotInterrupted):
        bulk.resume(row.pk)


def test_an_action_runs_in_a_thread_of_the_accepting_process(monkeypatch):
    monkeypatch.setattr(bulk, "run_in_background", True)
    insert_tasks(2_000)
    started = bulk.start("cancel", TaskFilter(type="echo"))
    assert started.total == 2_000
    deadline = time.monotonic() + 30
    while bulk.get(started.pk).state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = bulk.get(started.pk)
    assert (finished.state, finished.done) == ("finished", 2_000)
    assert not [t for t in threading.enumerate() if t.name == f"bulk-action-{started.pk}"]


def test_a_failing_batch_marks_the_action_failed(monkeypatch):
    insert_tasks(3)

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(queue, "apply_to_batch", broken)
    with pytest.raises(RuntimeError):
        bulk.start("cancel", TaskFilter(type="echo"))
    failed = BulkAction.objects.get()
    assert (failed.state, failed.error) == ("failed", "database went away")
    assert statuses() == {"QUEUED": 3}


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="action must be one of cancel, retry"):
        bulk.start("delete", TaskFilter(type="echo"))
