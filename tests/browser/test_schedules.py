"""Schedules in a real browser with a real supervisor: a schedule made in the admin runs
every interval and its runs appear on its page as they happen; Run now adds one at once."""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS, in_thread, log_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

RUN_ROWS = "#schedule-runs tr.schedule-run"


def _runs(name: str) -> list[dict]:
    from tasks.models import ScheduleRun

    return list(
        ScheduleRun.objects.filter(schedule__name=name)
        .order_by("created_at")
        .values("slot", "task_id")
    )


def _statuses(name: str) -> list[str]:
    from tasks.models import ScheduleRun, Task

    ids = ScheduleRun.objects.filter(schedule__name=name).values_list("task_id", flat=True)
    return list(Task.objects.filter(id__in=ids).values_list("status", flat=True))


def test_a_schedule_made_in_the_admin_runs_every_second_and_run_now_adds_a_run(
    supervised, live_url, page
):
    log_in(page, live_url)
    page.goto(f"{live_url}/admin/tasks/schedule/add/")
    page.fill("#id_name", "every second")
    page.fill("#id_type", "echo")
    page.fill("#id_params", '{"from": "the admin"}')
    page.fill("#id_cron", "*/5 * * * *")  # and an interval: refused, on that field
    page.fill("#id_interval_seconds", "1")
    page.fill("#id_timezone", "UTC")
    page.click("input[name=_save]")
    error = page.locator(".field-interval_seconds .errorlist")
    assert "not both" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "schedule-admin-error.png"), full_page=True)
    page.fill("#id_cron", "")
    page.click("input[name=_save]")
    page.wait_for_url(f"{live_url}/admin/tasks/schedule/")
    page.screenshot(path=str(ARTIFACTS / "schedule-admin.png"), full_page=True)

    page.goto(f"{live_url}/dashboard/schedules/")
    page.click("text=every second")
    page.wait_for_selector("h1:has-text('every second')")
    # The page refreshes itself as tasks arrive: runs appear, one per second, and complete.
    # (Locators, not wait_for_function: the page's CSP forbids evaluating strings.)
    page.locator(f"{RUN_ROWS}:nth-child(4)").wait_for(timeout=30_000)
    page.wait_for_selector(f"{RUN_ROWS} .status-completed", timeout=30_000)
    runs = in_thread(_runs, "every second")
    slots = [run["slot"] for run in runs]
    assert len(slots) >= 4 and None not in slots
    gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)]
    assert all(gap >= 1 and gap.is_integer() for gap in gaps), gaps  # one task per slot
    assert gaps.count(1.0) >= len(gaps) - 1, gaps  # every second (a slow second may skip)
    page.screenshot(path=str(ARTIFACTS / "schedule-runs.png"), full_page=True)

    # Paused, it stops; Run now still adds one run at once, shown as such.
    page.click("#schedule-body button[value=pause]")
    page.wait_for_selector("#schedule-body button[value=resume]")
    before = len(in_thread(_runs, "every second"))
    page.click("#schedule-body button[value=run]")
    page.wait_for_selector(f"{RUN_ROWS} >> text=run now", timeout=5_000)
    after = in_thread(_runs, "every second")
    assert len(after) == before + 1 and after[-1]["slot"] is None
    page.locator(f"{RUN_ROWS}:first-child .status-completed").wait_for(timeout=30_000)
    page.wait_for_timeout(2500)  # paused: no more scheduled runs
    assert len(in_thread(_runs, "every second")) == before + 1
    assert set(in_thread(_statuses, "every second")) == {"COMPLETED"}

    page.goto(f"{live_url}/dashboard/schedules/")
    page.screenshot(path=str(ARTIFACTS / "schedules.png"), full_page=True)
    assert page.locator("#schedule-rows tr").count() == 1
    assert "paused" in page.locator("#schedule-rows").inner_text()
