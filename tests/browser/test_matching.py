"""Search by params and "Cancel all matching" on 10,000 tasks, in Chromium against daphne:
the confirmation's count, the progress as it advances, and the database afterwards."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from tasks.models import Task
from tests.browser.conftest import ARTIFACTS, in_thread, log_in, server_env, start_daphne, stop

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MATCHING, OTHERS = 10_000, 2_000


@pytest.fixture
def slow_bulk_url(transactional_db, test_database_url):
    """A server whose bulk actions take small batches with pauses, so their progress can be
    watched advancing (40 batches of 250 over a few seconds)."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = server_env(
        test_database_url, SEEDCORE_BULK_BATCH="250", SEEDCORE_BULK_PAUSE_SECONDS="0.1"
    )
    process, url = start_daphne(env, ARTIFACTS / "daphne-matching.log")
    try:
        yield url
    finally:
        stop(process)


def _seed() -> None:
    # One statement: 10,000 tasks of customer 42 and 2,000 of customer 7, all QUEUED.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tasks (type, params) SELECT 'charge', jsonb_build_object('customer', "
            "CASE WHEN g <= %s THEN 42 ELSE 7 END, 'order', g) FROM generate_series(1, %s) AS g",
            [MATCHING, MATCHING + OTHERS],
        )


def _statuses() -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for customer, status in Task.objects.values_list("params__customer", "status"):
        counts[(customer, status)] = counts.get((customer, status), 0) + 1
    return counts


def test_search_by_params_then_cancel_all_matching_ten_thousand(slow_bulk_url, page):
    violations = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    in_thread(_seed)
    log_in(page, slow_bulk_url)
    page.goto(f"{slow_bulk_url}/dashboard/tasks/")
    page.fill("input[name=params]", '{"customer": 42}')
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/dashboard/tasks/?*params=*")
    assert page.locator("#task-rows tr").count() == 50
    assert "Cancel all matching" in page.inner_text(".toolbar")
    page.screenshot(path=ARTIFACTS / "tasks-search.png", full_page=True)

    page.click("#cancel-matching")
    page.wait_for_selector("#matching-confirm")
    assert page.inner_text("#matching-confirm h1") == "Cancel 10,000 tasks matching this filter?"
    assert '{"customer": 42}' in page.inner_text(".filter-summary")
    page.screenshot(path=ARTIFACTS / "matching-confirm.png", full_page=True)
    # Nothing is touched before the confirmation.
    assert in_thread(_statuses) == {(42, "QUEUED"): MATCHING, (7, "QUEUED"): OTHERS}

    page.click("#confirm-matching")
    page.wait_for_selector("#matching-progress")
    seen, shot = [], False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = page.get_attribute("#matching-progress", "data-state")
        handled = int(page.inner_text("#bulk-handled").replace(",", ""))
        seen.append(handled)
        if state == "running" and 0 < handled < MATCHING and not shot:
            page.screenshot(path=ARTIFACTS / "matching-progress.png", full_page=True)
            shot = True
        if state != "running":
            break
        time.sleep(0.2)
    assert state == "finished", f"still {state} after 60 s; handled {seen[-1]}"
    # The page updated while it ran: counts between none and all, rising, then all.
    between = sorted({n for n in seen if 0 < n < MATCHING})
    assert len(between) >= 2, seen
    assert seen == sorted(seen)
    assert page.inner_text("#bulk-done") == "10,000" and page.inner_text("#bulk-skipped") == "0"
    page.screenshot(path=ARTIFACTS / "matching-finished.png", full_page=True)

    assert in_thread(_statuses) == {(42, "CANCELLED"): MATCHING, (7, "QUEUED"): OTHERS}
    assert violations == []  # the polling works under the Content-Security-Policy
