"""Unique keys as an operator sees them: the admin's form error, the task page's key."""

from __future__ import annotations

import pytest

from tasks import queue
from tests.browser.conftest import ARTIFACTS, in_thread, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_add_of_a_held_key_and_the_task_page(live_url, page):
    holder = in_thread(queue.submit, type="report", unique_key="nightly-report").task
    log_in(page, live_url)
    page.goto(f"{live_url}/admin/tasks/task/add/")
    page.fill("#id_type", "report")
    page.fill("#id_unique_key", "nightly-report")
    page.click("input[name=_save]")
    error = page.locator(".field-unique_key .errorlist")
    error.wait_for(timeout=10_000)
    assert holder["id"] in error.inner_text() and "already holds this key" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "unique-admin-add.png"), full_page=True)

    page.goto(f"{live_url}/dashboard/tasks/{holder['id']}/")
    facts = page.locator("dl.facts").first
    assert "nightly-report" in facts.inner_text()
    page.screenshot(path=str(ARTIFACTS / "unique-task-page.png"), full_page=True)
