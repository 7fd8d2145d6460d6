"""Slots, catch-up and validation of schedules (tasks.schedules): pure, no database."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tasks.schedules import InvalidSchedule, Timing, next_slot, plan_due, validate_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def test_interval_slots_are_multiples_of_the_interval_since_the_epoch():
    every_10s = Timing(interval_seconds=10)
    assert next_slot(every_10s, datetime(2026, 5, 1, 12, 0, 3, tzinfo=UTC)) == datetime(
        2026, 5, 1, 12, 0, 10, tzinfo=UTC
    )
    # Strictly after: a slot is never its own successor.
    assert next_slot(every_10s, datetime(2026, 5, 1, 12, 0, 10, tzinfo=UTC)) == datetime(
        2026, 5, 1, 12, 0, 20, tzinfo=UTC
    )
    hourly = Timing(interval_seconds=3600)
    after = datetime(2026, 5, 1, 14, 59, 59, 999_999, tzinfo=BERLIN)
    assert next_slot(hourly, after) == datetime(2026, 5, 1, 13, 0, tzinfo=UTC)


def test_cron_slots_are_in_the_schedules_timezone():
    at_0930 = Timing(cron="30 9 * * *", timezone="Europe/Berlin")
    after = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    # 09:30 in Berlin in winter is 08:30 UTC; in summer, 07:30 UTC.
    assert next_slot(at_0930, after) == datetime(2026, 1, 11, 8, 30, tzinfo=UTC)
    assert next_slot(at_0930, datetime(2026, 7, 10, 12, 0, tzinfo=UTC)) == datetime(
        2026, 7, 11, 7, 30, tzinfo=UTC
    )
    every_5_min = Timing(cron="*/5 * * * *")
    assert next_slot(every_5_min, datetime(2026, 1, 1, 0, 5, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 10, tzinfo=UTC
    )


def test_a_0230_run_on_a_spring_forward_day_runs_at_0300_right_after_the_clock_change():
    # Europe/Berlin jumps from 02:00 to 03:00 on 29 March 2026: 02:30 does not exist.
    nightly = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    slot = next_slot(nightly, datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    assert slot.astimezone(BERLIN) == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    assert slot == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    # ... and the next day is back at 02:30.
    assert next_slot(nightly, slot).astimezone(BERLIN).timetuple()[:5] == (2026, 3, 30, 2, 30)


def test_a_0230_run_on_a_fall_back_day_runs_once():
    # On 25 October 2026 Berlin's 02:30 happens twice (CEST, then CET): one run, the first.
    nightly = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    slot = next_slot(nightly, datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN))
    assert slot == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert next_slot(nightly, slot) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # 02:30 CET


def test_a_due_slot_reached_before_the_next_one_runs():
    timing = Timing(interval_seconds=60)
    due = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    for catch_up in ("skip", "once"):
        plan = plan_due(timing, catch_up, due, due + timedelta(seconds=59))
        assert plan.run
        assert plan.next_run_at == due + timedelta(seconds=60)


def test_missed_slots_are_skipped_or_run_once_then_the_schedule_resumes_after_now():
    timing = Timing(interval_seconds=60)
    due = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    now = due + timedelta(minutes=10, seconds=30)  # ten slots missed while nothing ran
    skip = plan_due(timing, "skip", due, now)
    once = plan_due(timing, "once", due, now)
    assert (skip.run, once.run) == (False, True)
    assert skip.next_run_at == once.next_run_at == due + timedelta(minutes=11)


def valid(**overrides):
    values = {
        "name": "nightly report",
        "type": "echo",
        "params": {"a": 1},
        "priority": 0,
        "cron": "0 3 * * *",
        "interval_seconds": None,
        "timezone": "Europe/Berlin",
        "catch_up": "skip",
    }
    return {**values, **overrides}


def test_a_valid_schedule_passes():
    validate_schedule(valid())
    validate_schedule(valid(cron="", interval_seconds=1))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron": "", "interval_seconds": None}, "cron"),
        ({"interval_seconds": 60}, "interval_seconds"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "", "interval_seconds": 0}, "interval_seconds"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"type": ""}, "type"),
        ({"type": "x" * 201}, "type"),
        ({"params": ["not", "an", "object"]}, "params"),
        ({"params": {"nul": "\x00"}}, "params"),
        ({"priority": 5000}, "priority"),
        ({"catch_up": "all"}, "catch_up"),
        ({"name": "  "}, "name"),
    ],
)
def test_each_broken_field_is_named(overrides, field):
    with pytest.raises(InvalidSchedule) as caught:
        validate_schedule(valid(**overrides))
    assert field in caught.value.errors, caught.value.errors


def test_the_supervisor_sleeps_until_the_next_run_within_bounds():
    from tasks.schedules import MIN_SLEEP_SECONDS, seconds_until

    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert seconds_until(None, now, cap=3.0) == 3.0
    assert seconds_until(now + timedelta(seconds=0.4), now, cap=3.0) == pytest.approx(0.4)
    assert seconds_until(now + timedelta(hours=1), now, cap=3.0) == 3.0
    assert seconds_until(now - timedelta(seconds=5), now, cap=3.0) == MIN_SLEEP_SECONDS
