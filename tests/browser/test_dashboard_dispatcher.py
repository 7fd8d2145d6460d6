"""The dashboard in a real browser with the real Ray side: ``manage.py rundispatcher``
attached to the session's local Ray, and daphne pointed at the same cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from tasks import queue, selectors
from tests.browser.conftest import ARTIFACTS, ROOT, in_thread, log_in, server_env, start_daphne
from tests.browser.conftest import stop as stop_process
from tests.dashboard.conftest import failed_task

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

COORDINATOR = "seedcore_coordinator"
# Where the task page links each run's node and actor (nothing needs to answer there).
RAY_DASHBOARD = "http://ray-dashboard.test:8265"


@pytest.fixture
def failed_echo(transactional_db) -> dict:
    """A FAILED echo task, made before any dispatcher runs (so none races to claim it)."""
    return failed_task("echo", params={"retried": True}, error="RuntimeError: first try")


@pytest.fixture
def stack(ray_cluster, test_database_url, transactional_db):
    """rundispatcher (1 dispatcher) and daphne on the session's Ray; yields the server URL."""
    import ray

    ARTIFACTS.mkdir(exist_ok=True)
    cluster = {
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RAY_NAMESPACE": ray_cluster["namespace"],
    }
    env = server_env(test_database_url, **cluster, RAY_DASHBOARD_URL=RAY_DASHBOARD)
    dispatcher = subprocess.Popen(
        [sys.executable, "manage.py", "rundispatcher", "--dispatchers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    supervising = threading.Event()

    def read() -> None:
        for line in dispatcher.stdout:
            lines.append(line)
            if line.startswith("supervising"):
                supervising.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert supervising.wait(180), "".join(lines)
        server, url = start_daphne(env, ARTIFACTS / "daphne-dispatcher.log")
        try:
            yield url
        finally:
            stop_process(server)
    finally:
        dispatcher.send_signal(signal.SIGTERM)
        try:
            dispatcher.wait(60)
        except subprocess.TimeoutExpired:
            dispatcher.kill()
        reader.join(5)
        (ARTIFACTS / "rundispatcher.log").write_text("".join(lines))


def _healthy_badge(page, timeout_ms: int) -> None:
    page.wait_for_selector("#coordinator-badge[data-healthy='yes']", timeout=timeout_ms)


def test_a_task_turns_completed_live(stack, page):
    log_in(page, stack)
    _healthy_badge(page, 30_000)
    page.screenshot(path=ARTIFACTS / "overview-with-dispatcher.png", full_page=True)
    page.goto(f"{stack}/dashboard/tasks/")
    page.wait_for_selector("#live-indicator[data-state='on']")
    task = in_thread(queue.enqueue, type="echo", params={"live": True})
    page.wait_for_selector(f"#task-{task['id']} .status-completed", timeout=30_000)
    page.goto(f"{stack}/dashboard/organism/")
    page.wait_for_selector("#organs table")
    page.screenshot(path=ARTIFACTS / "organism-with-dispatcher.png", full_page=True)


def test_a_failed_task_retried_from_its_page_completes(failed_echo, stack, page):
    log_in(page, stack)
    page.goto(f"{stack}/dashboard/tasks/{failed_echo['id']}/")
    page.wait_for_selector("#live-indicator[data-state='on']")
    assert page.inner_text("#task-status") == "FAILED"
    page.click("button[value=run]")
    page.wait_for_selector("#task-status.status-completed", timeout=30_000)
    body = page.inner_text("main")
    assert "RuntimeError: first try" in body  # the earlier attempt stays in the history
    page.screenshot(path=ARTIFACTS / "task-retried.png", full_page=True)


def test_a_handlers_log_lines_show_on_the_task_page_of_their_attempt(stack, page):
    log_in(page, stack)
    task = in_thread(queue.enqueue, type="chatty", params={"say": "hola from Chromium"})
    page.goto(f"{stack}/dashboard/tasks/{task['id']}/")
    page.wait_for_selector("#live-indicator[data-state='on']")
    page.wait_for_selector("#task-status.status-completed", timeout=60_000)
    run = page.locator("#run-1[data-outcome='completed']")
    log = run.locator(".run-log")
    log.wait_for()
    assert log.is_visible()  # the latest run is open
    text = log.inner_text()
    assert "INFO tests.taskapp.chatty: logged: hola from Chromium (attempt 1)" in text
    assert "printed: hola from Chromium" in text and "to stderr: hola from Chromium" in text
    # Where it ran, as the agent reported it, linked into the Ray dashboard.
    [stored] = in_thread(selectors.get_task, task["id"])["runs"]
    node = run.locator("a.run-node")
    assert node.get_attribute("href") == f"{RAY_DASHBOARD}/#/cluster/nodes/{stored['node_id']}"
    actor = run.locator("a.run-actor")
    assert actor.get_attribute("href") == f"{RAY_DASHBOARD}/#/actors/{stored['actor_id']}"
    assert actor.inner_text() == stored["actor_id"]
    assert str(stored["pid"]) in run.inner_text()
    page.screenshot(path=ARTIFACTS / "task-run-log.png", full_page=True)


def test_the_badge_follows_the_coordinator_dying_and_coming_back(stack, ray_cluster, page):
    import ray

    log_in(page, stack)
    _healthy_badge(page, 30_000)

    def kill_coordinator() -> None:
        handle = ray.get_actor(COORDINATOR, namespace=ray_cluster["namespace"])
        ray.kill(handle, no_restart=True)

    in_thread(kill_coordinator)
    killed = time.monotonic()
    page.wait_for_selector("#coordinator-badge[data-healthy='no']", timeout=5_000)
    assert time.monotonic() - killed < 5.0
    page.screenshot(path=ARTIFACTS / "coordinator-down.png")
    # The supervisor notices within its interval and starts a new Coordinator.
    _healthy_badge(page, 120_000)
