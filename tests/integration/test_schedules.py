"""Schedules against PostgreSQL: due runs enqueued exactly once, catch-up, crashes, operator
actions (tasks.schedules)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from tasks import queue, schedules
from tasks.models import Schedule, ScheduleRun, Task

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make(name: str = "every minute", **fields) -> Schedule:
    values = {"name": name, "type": "echo", "params": {"n": 1}, "interval_seconds": 60}
    return Schedule.objects.create(**{**values, "next_run_at": T0, **fields})


def tasks_of(schedule: Schedule) -> list[Task]:
    ids = ScheduleRun.objects.filter(schedule=schedule).values_list("task_id", flat=True)
    return list(Task.objects.filter(id__in=ids))


def test_a_due_schedule_enqueues_its_task_and_moves_to_the_next_slot():
    schedule = make(params={"hello": "world"}, priority=7)
    assert schedules.enqueue_due(T0 - timedelta(seconds=1)) == []  # not yet due
    [task_id] = schedules.enqueue_due(T0 + timedelta(seconds=2))
    task = Task.objects.get(id=task_id)
    assert (task.type, task.params, task.priority, task.status) == (
        "echo",
        {"hello": "world"},
        7,
        "QUEUED",
    )
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(seconds=60)
    assert schedule.last_run_at == T0 + timedelta(seconds=2)
    assert str(schedule.last_task_id) == task_id
    assert ScheduleRun.objects.get(schedule=schedule).slot == T0
    assert schedules.enqueue_due(T0 + timedelta(seconds=3)) == []  # that slot is done


def test_paused_schedules_are_not_enqueued():
    make(enabled=False)
    assert schedules.enqueue_due(T0 + timedelta(seconds=1)) == []


@pytest.mark.parametrize(("catch_up", "runs"), [("skip", 0), ("once", 1)])
def test_after_downtime_missed_slots_are_skipped_or_run_once(catch_up, runs):
    schedule = make(catch_up=catch_up)
    now = T0 + timedelta(minutes=30, seconds=5)  # 30 slots passed while nothing ran
    assert len(schedules.enqueue_due(now)) == runs
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(minutes=31)
    assert len(tasks_of(schedule)) == runs
    assert schedules.enqueue_due(now) == []


def _race(supervisors: int, now: datetime) -> list[str]:
    """``supervisors`` threads, each on its own database connection, call enqueue_due at the
    same instant; returns every task id any of them enqueued."""
    start = threading.Barrier(supervisors)
    found: list[str] = []
    errors: list[BaseException] = []

    def supervisor() -> None:
        try:
            start.wait(timeout=30)
            found.extend(schedules.enqueue_due(now))
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=supervisor) for _ in range(supervisors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return found


def test_supervisors_racing_enqueue_each_slot_exactly_once():
    every = [make(f"schedule {n}", interval_seconds=10) for n in range(20)]
    rounds = 15
    for round_ in range(rounds):
        now = T0 + timedelta(seconds=10 * round_ + 1)
        found = _race(supervisors=4, now=now)
        assert len(found) == len(set(found)) == len(every), f"round {round_}"
    runs = ScheduleRun.objects.filter(schedule__in=every)
    assert runs.count() == Task.objects.count() == len(every) * rounds
    for schedule in every:
        slots = sorted(runs.filter(schedule=schedule).values_list("slot", flat=True))
        assert slots == [T0 + timedelta(seconds=10 * n) for n in range(rounds)]


def test_a_crash_before_the_commit_leaves_no_task_and_the_slot_still_due(monkeypatch):
    schedule = make()
    real_mark = schedules._mark

    def crash_after_the_insert(*args, **kwargs):
        assert Task.objects.count() == 1  # inserted, inside the transaction
        raise RuntimeError("supervisor died")

    monkeypatch.setattr(schedules, "_mark", crash_after_the_insert)
    with pytest.raises(RuntimeError):
        schedules.enqueue_due(T0 + timedelta(seconds=1))
    assert Task.objects.count() == 0
    assert ScheduleRun.objects.count() == 0
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 and schedule.last_task_id is None

    monkeypatch.setattr(schedules, "_mark", real_mark)  # the restarted supervisor
    assert len(schedules.enqueue_due(T0 + timedelta(seconds=2))) == 1
    assert [run.slot for run in ScheduleRun.objects.all()] == [T0]


def test_a_slot_set_back_by_hand_does_not_run_twice():
    schedule = make()
    schedules.enqueue_due(T0 + timedelta(seconds=1))
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=T0)  # an edit by psql
    assert schedules.enqueue_due(T0 + timedelta(seconds=2)) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(seconds=60)
    assert len(tasks_of(schedule)) == 1


def test_run_now_enqueues_at_once_without_touching_the_slots():
    schedule = make(enabled=False, next_run_at=None)
    task_id = schedules.run_now(schedule.pk)
    schedule.refresh_from_db()
    assert str(schedule.last_task_id) == task_id and schedule.last_run_at is not None
    assert schedule.next_run_at is None and not schedule.enabled
    run = ScheduleRun.objects.get(schedule=schedule)
    assert run.slot is None and str(run.task_id) == task_id
    schedules.run_now(schedule.pk)  # Run now twice is two tasks
    assert len(tasks_of(schedule)) == 2
    with pytest.raises(schedules.ScheduleNotFound):
        schedules.run_now(10**9)


def test_pause_and_resume():
    schedule = make()
    schedules.pause(schedule.pk)
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None
    before = datetime.now(UTC)
    schedules.resume(schedule.pk)
    schedule.refresh_from_db()
    # From the first slot after now: what passed while paused is not caught up.
    assert schedule.enabled and before < schedule.next_run_at <= before + timedelta(seconds=61)


def test_saving_a_new_schedule_starts_at_its_first_slot():
    schedule = schedules.save(
        Schedule(name="nightly", type="echo", cron="30 2 * * *", timezone="Europe/Berlin")
    )
    assert schedule.next_run_at > datetime.now(UTC)
    assert schedule.next_run_at.astimezone(schedules.ZoneInfo("Europe/Berlin")).hour in (2, 3)
    with pytest.raises(schedules.InvalidSchedule):
        schedules.save(Schedule(name="broken", type="echo", cron="* * *"))


def test_the_database_refuses_both_or_neither_of_cron_and_interval():
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        Schedule.objects.create(name="both", type="echo", cron="* * * * *", interval_seconds=5)


def test_pruning_a_task_deletes_its_run_and_clears_the_last_task():
    schedule = make()
    [task_id] = schedules.enqueue_due(T0 + timedelta(seconds=1))
    queue.cancel(task_id)
    assert queue.prune(older_than=timedelta(0)) == 1
    assert not Task.objects.filter(id=task_id).exists()
    assert ScheduleRun.objects.count() == 0
    schedule.refresh_from_db()
    assert schedule.last_task_id is None


def test_the_supervisors_schedule_thread_runs_a_1_second_schedule_every_second():
    from organism.supervisor import Supervisor, SupervisorOptions

    schedule = schedules.save(Schedule(name="every second", type="echo", interval_seconds=1))
    lines: list[str] = []
    boss = Supervisor(SupervisorOptions(interval=3.0), out=lines.append)
    stop = threading.Event()
    thread = threading.Thread(target=boss.run_schedules, args=(stop,))
    thread.start()
    try:
        threading.Event().wait(4.5)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not lines, lines  # no failed round
    runs = list(ScheduleRun.objects.filter(schedule=schedule).order_by("slot"))
    # Four or five slots passed (the first is up to a second away); each ran, in order.
    assert 4 <= len(runs) <= 5, [run.slot for run in runs]
    gaps = {(b.slot - a.slot).total_seconds() for a, b in zip(runs, runs[1:], strict=False)}
    assert gaps == {1.0}
    # Each task was enqueued promptly after its slot, though the round is 3 s.
    assert all((run.created_at - run.slot).total_seconds() < 1.0 for run in runs)


def test_a_schedule_with_a_timing_written_around_the_rules_is_paused_not_blocking():
    broken = make("broken", interval_seconds=None, cron="not a cron", next_run_at=T0)
    fine = make("fine", next_run_at=T0 + timedelta(seconds=1))
    assert len(schedules.enqueue_due(T0 + timedelta(seconds=2))) == 1
    broken.refresh_from_db()
    assert not broken.enabled and broken.next_run_at is None
    assert len(tasks_of(fine)) == 1


def test_the_cli_lists_schedules():
    import io
    import json

    from django.core.management import call_command

    def run(*args: str) -> str:
        out = io.StringIO()
        call_command("tasks", "schedules", *args, stdout=out)
        return out.getvalue()

    assert "no schedules" in run()
    schedule = make("nightly", interval_seconds=None, cron="30 2 * * *", timezone="Europe/Berlin")
    task_id = schedules.run_now(schedule.pk)
    header, row = run().splitlines()
    assert header.split()[:4] == ["ID", "NAME", "TYPE", "WHEN"]
    assert "nightly" in row and "30 2 * * * (Europe/Berlin)" in row and task_id[:8] in row
    [listed] = json.loads(run("--json"))
    assert listed["last_task_id"] == task_id and listed["enabled"] is True
