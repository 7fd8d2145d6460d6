"""The dashboard in a real browser with the real Ray side: ``manage.py rundispatcher``
attached to the session's local Ray, and daphne pointed at the same cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from tasks import queue
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
    env = server_env(test_database_url, **cluster)
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
