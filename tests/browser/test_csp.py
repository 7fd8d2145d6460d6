"""The Content-Security-Policy in a real browser: every page and htmx's live updates work
under it, and Chromium reports no violation."""

from __future__ import annotations

import pytest

from tasks import queue
from tests.browser.conftest import in_thread, log_in
from tests.dashboard.conftest import failed_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_dashboard_and_admin_work_under_the_csp_without_a_violation(live_url, page):
    violations = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.add_init_script(
        """document.addEventListener("securitypolicyviolation", (e) =>
            console.error("Content Security Policy violation: " + e.violatedDirective
                          + " " + e.blockedURI));"""
    )
    failed = in_thread(failed_task, "resize_image", error="ValueError: width out of range")
    response = page.goto(f"{live_url}/admin/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    log_in(page, live_url)
    page.wait_for_selector("#live-indicator[data-state='on']", timeout=10_000)  # websocket
    page.goto(f"{live_url}/dashboard/tasks/")
    page.wait_for_selector("#live-indicator[data-state='on']", timeout=10_000)
    task = in_thread(queue.enqueue, type="echo")
    page.locator(f"#task-{task['id']}").wait_for(timeout=5_000)  # htmx swapped it in, live
    page.goto(f"{live_url}/dashboard/tasks/{failed['id']}/")
    assert "width out of range" in page.inner_text("main")
    page.goto(f"{live_url}/dashboard/organism/")
    page.goto(f"{live_url}/admin/tasks/task/{failed['id']}/change/")
    assert "width out of range" in page.inner_text("#content")
    assert violations == []
