"""Two web replicas, one open dashboard on each: a task change reaches each socket once.

Each replica LISTENs on PostgreSQL and feeds its own sockets (an in-process channel layer), so
the frames the fleet sends grow with the sockets, not with replicas × sockets.
"""

from __future__ import annotations

import time

import pytest

from tasks import queue
from tests.browser.conftest import ARTIFACTS, in_thread, log_in, server_env, start_daphne, stop

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_replicas(transactional_db, test_database_url):
    ARTIFACTS.mkdir(exist_ok=True)
    started = [
        start_daphne(server_env(test_database_url), ARTIFACTS / f"daphne-replica-{n}.log")
        for n in (1, 2)
    ]
    try:
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            stop(process)


def frames_of(page) -> list[str]:
    """Every text frame the page's websockets receive, from now on."""
    frames: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived",
            lambda payload: frames.append(payload if isinstance(payload, str) else ""),
        ),
    )
    return frames


def test_each_socket_gets_each_task_change_once_with_two_replicas(two_replicas, browser):
    pages, frames = [], []
    for url in two_replicas:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        frames.append(frames_of(page))
        log_in(page, url)
        page.wait_for_selector("#live-indicator[data-state='on']", timeout=10_000)
        pages.append(page)
    time.sleep(1.0)  # each replica's relay LISTENs from its first socket on

    task_id = in_thread(queue.enqueue, type="echo")["id"]
    deadline = time.monotonic() + 10
    while not all(any(task_id in frame for frame in received) for received in frames):
        assert time.monotonic() < deadline, "a page never heard of the new task"
        pages[0].wait_for_timeout(100)  # lets Playwright deliver the frames
    pages[0].wait_for_timeout(2000)  # a duplicate would come within the relay's flush interval

    mentions = [sum(task_id in frame for frame in received) for received in frames]
    assert mentions == [1, 1], mentions
    for page in pages:
        page.context.close()
