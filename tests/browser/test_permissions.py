"""What each role sees in a real browser: a viewer reads the dashboard without a single action
button; an operator gets the task actions, and they work, but no organism control; a user in no
group is told which group to ask for."""

from __future__ import annotations

import pytest

from tasks import selectors
from tests.browser.conftest import ARTIFACTS, PASSWORD, in_thread, log_in
from tests.dashboard.conftest import failed_task

pytestmark = pytest.mark.browser

ACTION_BUTTONS = ("Retry selected", "Cancel selected")
# "… all matching" are links styled as buttons.
ACTION_LINKS = ("Retry all FAILED",)


@pytest.fixture
def roles(transactional_db, make_user):
    # Not staff: a SeedCore role needs no staff status (the dashboard has its own login).
    make_user("watcher", "viewer", password=PASSWORD)
    make_user("runner", "operator", password=PASSWORD)
    make_user("nobody", None, password=PASSWORD, is_staff=True)


def _buttons(page) -> set[str]:
    """The labels of the page's buttons, and of the links styled as buttons."""
    return {text.strip() for text in page.locator("main button, main a.button").all_inner_texts()}


def test_a_viewer_sees_no_action_buttons_and_an_operator_sees_task_actions(roles, live_url, page):
    failed = in_thread(failed_task, "resize_image")

    log_in(page, live_url, "watcher")
    page.goto(f"{live_url}/dashboard/tasks/")
    page.wait_for_selector(f"#task-{failed['id']}")
    assert page.locator("input[name=ids]").count() == 0
    assert not _buttons(page) & {*ACTION_BUTTONS, *ACTION_LINKS}
    page.screenshot(path=ARTIFACTS / "tasks-viewer.png", full_page=True)
    page.goto(f"{live_url}/dashboard/tasks/{failed['id']}/")
    assert "Run now" not in _buttons(page) and "Admin" not in page.inner_text("nav")
    page.goto(f"{live_url}/dashboard/organism/")
    assert not _buttons(page) & {"Initialize", "Shut down"}
    page.click("text=Sign out")
    page.wait_for_url(f"{live_url}/dashboard/login/")

    log_in(page, live_url, "runner")
    page.goto(f"{live_url}/dashboard/tasks/")
    page.wait_for_selector(f"#task-{failed['id']} input[name=ids]")
    assert {*ACTION_BUTTONS, *ACTION_LINKS} <= _buttons(page)
    page.screenshot(path=ARTIFACTS / "tasks-operator.png", full_page=True)
    page.goto(f"{live_url}/dashboard/organism/")
    assert not _buttons(page) & {"Initialize", "Shut down"}
    page.goto(f"{live_url}/dashboard/tasks/{failed['id']}/")
    page.click("button[value=run]")
    page.wait_for_selector("text=queued to run now")
    assert in_thread(selectors.get_task, failed["id"])["status"] == "QUEUED"


def test_a_user_in_no_group_is_told_which_group_to_ask_for(roles, live_url, page):
    page.goto(f"{live_url}/dashboard/")
    page.screenshot(path=ARTIFACTS / "login.png", full_page=True)
    log_in(page, live_url, "nobody")
    assert "add you to the 'viewer' group" in page.inner_text("main")
    page.screenshot(path=ARTIFACTS / "forbidden.png", full_page=True)
    page.click("text=Sign out")
    page.wait_for_url(f"{live_url}/dashboard/login/")
