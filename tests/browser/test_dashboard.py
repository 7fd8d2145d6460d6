"""The dashboard in a real browser (Debian's Chromium) against a live daphne server."""

from __future__ import annotations

import time

import pytest

from tasks import heartbeats, queue, selectors
from tests.browser.conftest import ARTIFACTS, in_thread, log_in
from tests.dashboard.conftest import completed_task, failed_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _wait_live(page) -> None:
    page.wait_for_selector("#live-indicator[data-state='on']", timeout=10_000)


def _seed() -> dict:
    done = completed_task(
        "echo",
        params={"message": "hello"},
        result={
            "output": "hello",
            "routing": {
                "path": "FAST",
                "organ_id": "utility",
                "agent_id": "utility-0",
                "duration_ms": 1.2,
            },
        },
        description="say hello",
        domain="utility",
    )
    failed = failed_task(
        "resize_image",
        params={"width": 300},
        domain="media",
        error="ValueError: width out of range",
    )
    queue.enqueue_many([{"type": "echo", "domain": "utility"} for _ in range(5)])
    heartbeats.beat(name="dispatcher-0", node="node-a", pid=4242, in_flight=1, processed=12)
    return {"done": done, "failed": failed}


def test_log_in_and_every_page_renders(live_url, page):
    seeded = in_thread(_seed)
    log_in(page, live_url)
    _wait_live(page)
    # The monitor answers within a few seconds; no Coordinator runs here, so: unhealthy.
    page.wait_for_selector("#coordinator-badge[data-healthy='no']", timeout=10_000)
    # The badge says why (Ray refused, or no answer in time), not just "unhealthy".
    assert page.get_attribute("#coordinator-badge", "title") not in ("", "Coordinator")
    assert page.locator(".count.count-completed .count-n").inner_text() == "1"
    assert "dispatcher-0" in page.locator("#dispatchers").inner_text()
    page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)

    page.click("nav >> text=Tasks")
    page.wait_for_selector(f"#task-{seeded['failed']['id']}")
    assert page.locator("#task-rows tr").count() == 7
    page.screenshot(path=ARTIFACTS / "tasks.png", full_page=True)

    page.click(f"#task-{seeded['failed']['id']} a")
    page.wait_for_selector("text=Failed attempts")
    assert "ValueError: width out of range" in page.inner_text("main")
    page.screenshot(path=ARTIFACTS / "task-failed.png", full_page=True)
    page.goto(f"{live_url}/dashboard/tasks/{seeded['done']['id']}/")
    assert "utility-0" in page.inner_text("main")
    page.screenshot(path=ARTIFACTS / "task-completed.png", full_page=True)

    page.click("nav >> text=Organism")
    page.wait_for_selector("text=does not answer")
    page.screenshot(path=ARTIFACTS / "organism.png", full_page=True)

    page.goto(f"{live_url}/admin/tasks/task/")
    assert seeded["failed"]["id"][:8] in page.inner_text("#result_list")
    page.screenshot(path=ARTIFACTS / "admin-changelist.png", full_page=True)
    page.goto(f"{live_url}/admin/tasks/task/{seeded['failed']['id']}/change/")
    assert "ValueError: width out of range" in page.inner_text("#content")
    page.screenshot(path=ARTIFACTS / "admin-change.png", full_page=True)

    page.emulate_media(color_scheme="dark")
    page.goto(f"{live_url}/dashboard/tasks/{seeded['failed']['id']}/")
    page.screenshot(path=ARTIFACTS / "task-failed-dark.png", full_page=True)
    page.emulate_media(color_scheme="light")

    page.set_viewport_size({"width": 390, "height": 844})
    for name, path in [("overview", "/dashboard/"), ("tasks", "/dashboard/tasks/")]:
        page.goto(live_url + path)
        _wait_live(page)
        page.screenshot(path=ARTIFACTS / f"{name}-mobile.png", full_page=True)


def test_tasks_page_shows_new_tasks_and_changes_live(live_url, page):
    log_in(page, live_url)
    page.goto(f"{live_url}/dashboard/tasks/")
    _wait_live(page)
    page.evaluate("window.__notReloaded = true")
    task = in_thread(queue.enqueue, type="echo", description="enqueued meanwhile")
    row = page.locator(f"#task-{task['id']}")
    row.wait_for(timeout=5_000)
    assert "QUEUED" in row.inner_text()
    started = time.monotonic()
    in_thread(queue.cancel, task["id"])
    page.wait_for_selector(f"#task-{task['id']} .status-cancelled", timeout=5_000)
    elapsed = time.monotonic() - started
    assert page.evaluate("window.__notReloaded") is True  # updated in place, no reload
    assert elapsed < 1.0, f"a status change took {elapsed:.2f} s to reach the page"
    (ARTIFACTS / "latency.txt").write_text(f"status change to DOM: {elapsed * 1000:.0f} ms\n")


def _set_hidden(page, hidden: bool) -> None:
    """Play the browser hiding or showing the tab (headless Chromium never hides it)."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_live_updates_pause_while_hidden_and_catch_up_when_shown(live_url, page):
    log_in(page, live_url)
    page.goto(f"{live_url}/dashboard/tasks/")
    _wait_live(page)
    _set_hidden(page, True)
    assert page.get_attribute("#live-indicator", "data-state") == "paused"
    task = in_thread(queue.enqueue, type="echo")
    page.wait_for_timeout(2_000)  # several frames' worth: none may be applied
    assert page.locator(f"#task-{task['id']}").count() == 0
    _set_hidden(page, False)
    page.locator(f"#task-{task['id']}").wait_for(timeout=3_000)


def test_row_selection_survives_live_refresh_and_bulk_retry_works(live_url, page):
    failed = in_thread(failed_task, "resize_image")
    log_in(page, live_url)
    page.goto(f"{live_url}/dashboard/tasks/")
    _wait_live(page)
    page.check(f"#task-{failed['id']} input[name=ids]")
    other = in_thread(queue.enqueue, type="echo")
    page.locator(f"#task-{other['id']}").wait_for(timeout=5_000)  # the body was refreshed
    assert page.is_checked(f"#task-{failed['id']} input[name=ids]")
    page.click("button[value=retry]")
    page.wait_for_selector("text=Queued 1 task(s)")
    assert in_thread(selectors.get_task, failed["id"])["status"] == "QUEUED"


def test_anonymous_websocket_is_refused(live_url, page):
    page.goto(f"{live_url}/admin/login/")
    outcome = page.evaluate(
        """(url) => new Promise((resolve) => {
            const socket = new WebSocket(url);
            let opened = false;
            socket.onopen = () => { opened = true; };
            socket.onclose = (event) => resolve({opened, code: event.code});
            setTimeout(() => resolve({opened, code: 'timeout'}), 5000);
        })""",
        live_url.replace("http://", "ws://") + "/ws/dashboard/",
    )
    assert outcome["opened"] is False and outcome["code"] != "timeout"
