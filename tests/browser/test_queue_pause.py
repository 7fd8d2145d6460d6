"""Pause and resume a task type from the dashboard, in Chromium, with real dispatchers (the
``supervised`` Supervisor on the session's Ray) claiming from the test database."""

from __future__ import annotations

import time

import pytest

from tasks import queue, selectors
from tasks.models import Task
from tests.browser.conftest import ARTIFACTS, in_thread, log_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

SLEEPS = 4
ECHOES = 6


@pytest.fixture
def queued_while_all_paused(transactional_db) -> None:
    """Tasks of two types, queued while all claiming is paused, before any dispatcher starts
    (so none can claim them before the operator acts)."""
    queue.pause()
    queue.enqueue_many([{"type": "sleep", "params": {"seconds": 0.2}}] * SLEEPS)
    queue.enqueue_many([{"type": "echo", "params": {"n": n}} for n in range(ECHOES)])


def statuses(task_type: str) -> list[str]:
    return sorted(Task.objects.filter(type=task_type).values_list("status", flat=True))


def wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not in_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_pause_a_type_while_its_tasks_are_queued_then_resume_it(
    queued_while_all_paused, supervised, live_url, page
):
    log_in(page, live_url)
    banner = page.locator("#paused-banner")
    assert "all types" in banner.inner_text()

    # Pause the sleep type from its row in the Queue section, then let everything else run.
    page.click('tr[data-type="sleep"] button[value="pause"]')
    page.wait_for_selector('#paused-banner li[data-paused-type="sleep"]')
    page.click('#paused-banner li[data-paused-type=""] button')
    page.wait_for_selector('#paused-banner li[data-paused-type=""]', state="detached")

    wait_for(lambda: statuses("echo") == ["COMPLETED"] * ECHOES)
    time.sleep(1.0)  # dispatchers keep claiming (poll 0.2 s): the paused type must stay put
    assert in_thread(statuses, "sleep") == ["QUEUED"] * SLEEPS

    page.goto(f"{live_url}/dashboard/tasks/?type=sleep")
    assert page.locator(".badge-wait").count() == SLEEPS
    assert "type sleep is paused" in page.locator("#task-rows").inner_text()
    page.screenshot(path=ARTIFACTS / "queue-paused-tasks.png", full_page=True)

    # Resume from the tasks page's banner: the dispatchers wake and run them.
    page.click('#paused-banner li[data-paused-type="sleep"] button')
    page.wait_for_url(f"{live_url}/dashboard/tasks/")
    assert page.locator("#paused-banner").count() == 0
    wait_for(lambda: statuses("sleep") == ["COMPLETED"] * SLEEPS)
    assert not in_thread(selectors.queue_state).anything_paused

    page.goto(f"{live_url}/dashboard/")
    page.screenshot(path=ARTIFACTS / "queue-overview.png", full_page=True)


def test_the_queue_section_pauses_any_type_and_sets_a_limit(live_url, page):
    in_thread(queue.enqueue_many, [{"type": "resize_image"}, {"type": "echo"}])
    log_in(page, live_url)

    page.fill('#queue input[name="type"]', "not_yet_arrived")
    page.click('#queue button:has-text("Pause type")')
    page.wait_for_selector('#paused-banner li[data-paused-type="not_yet_arrived"]')

    row = page.locator('tr[data-type="resize_image"]')
    row.locator('input[name="limit"]').fill("2")
    row.locator('button[value="limit"]').click()
    page.wait_for_selector('tr[data-type="resize_image"] input[name="limit"][value="2"]')
    assert in_thread(selectors.queue_control, "resize_image")["concurrency_limit"] == 2
    assert "0 of 2" in page.locator('tr[data-type="resize_image"]').inner_text()
    page.screenshot(path=ARTIFACTS / "queue-section.png", full_page=True)
