"""Slow consumers on the dashboard websocket (issue 6): 200 connections through a burst of task
changes, half of them never reading, and the server's memory stays bounded.

100 sockets are opened by a real Chromium page and acknowledge every frame as dashboard.js
does; 100 raw clients complete the handshake with a tiny receive buffer and then never read.
daphne has no backpressure: without the window of :mod:`dashboard.flow`, every frame of the
burst would be held for each stalled client, first in the kernel's send buffer of its socket
(which grows to 4 MB here), then in daphne's own memory. So what the server holds is counted
as daphne's RSS plus the bytes queued on its sockets.
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connections

from dashboard import flow
from tasks import queue
from tests.browser.conftest import (
    ARTIFACTS,
    in_thread,
    log_in,
    server_env,
    start_daphne,
    stop,
)
from tests.dashboard.conftest import told

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READING_SOCKETS = 100
STALLED_SOCKETS = 100
ROUND_TASKS = 100  # a round: 100 tasks enqueued, claimed, completed
BURST_ROUNDS = 40  # 4,000 tasks, 12,000 changes, ~20 s of frames
ROUND_PAUSE = 0.1  # between a round's steps
# Growth of what daphne holds (RSS + socket send queues) during the burst, once the stalled
# clients' windows are full. Measured on 2 loaded cores: 2-6 MB with the window (the reading
# sockets' windows alone may hold up to 100 x 4 frames of ~23 KB); 77-78 MB without it, the
# frames sent to every stalled client.
MEMORY_GROWTH_BOUND_MB = 32


@pytest.fixture
def server(transactional_db, test_database_url):
    """daphne, as its process and URL. A socket that stays silent is pinged after
    ``--ping-interval`` and dropped ``--ping-timeout`` later (20 + 30 s by default): here the
    stalled clients must outlive the burst so what they were sent can be counted."""
    ARTIFACTS.mkdir(exist_ok=True)
    process, url = start_daphne(
        server_env(test_database_url),
        ARTIFACTS / "daphne-slow-consumer.log",
        ["--ping-interval", "600"],
    )
    try:
        yield process, url
    finally:
        stop(process)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def send_queues_mb(port: int) -> float:
    """Bytes written by the server on ``port`` that its clients have not acknowledged yet
    (``tx_queue`` of /proc/net/tcp): the frames sitting in the kernel's send buffers."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            total += int(fields[4].split(":")[0], 16)
    return total / 2**20


class PeakMemory(threading.Thread):
    """Samples what the server holds (RSS + socket send queues) until stopped; keeps the
    highest figure."""

    def __init__(self, pid: int, port: int):
        super().__init__(daemon=True)
        self.pid, self.port, self._done = pid, port, threading.Event()
        self.baseline = self.peak = self.sample()

    def sample(self) -> float:
        return rss_mb(self.pid) + send_queues_mb(self.port)

    def run(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, self.sample())

    def finish(self) -> float:
        """Growth since the start, in MB."""
        self._done.set()
        self.join()
        return self.peak - self.baseline


# ---------------------------------------------------------------------------------------------
# The stalled clients: a handshake, then nothing read until the test reads everything at once


class StalledClient:
    """A websocket client that completes the handshake, then reads nothing until told to."""

    def __init__(self, base_url: str, session_id: str):
        parts = urlsplit(base_url)
        self.sock = socket.socket()
        # Set before connecting so the advertised window is small: the server, not this
        # socket's kernel buffer, must hold whatever it sends beyond a few KB.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/dashboard/ HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {base_url}\r\nCookie: sessionid={session_id}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.received = b""
        while b"\r\n\r\n" not in self.received:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed the connection during the handshake"
            self.received += chunk
        head, self.received = self.received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head.decode(errors="replace")

    def text_frames(self) -> list[str]:
        """The complete text frames received so far (server frames are never masked)."""
        data, position, texts = self.received, 0, []
        while len(data) - position >= 2:
            opcode, length = data[position] & 0x0F, data[position + 1] & 0x7F
            header = {126: 4, 127: 10}.get(length, 2)
            if len(data) - position < header:
                break
            if length == 126:
                length = int.from_bytes(data[position + 2 : position + 4])
            elif length == 127:
                length = int.from_bytes(data[position + 2 : position + 10])
            if len(data) - position < header + length:
                break
            if opcode == 0x1:
                texts.append(data[position + header : position + header + length].decode())
            position += header + length
        return texts


def read_everything(clients: list[StalledClient], at_least: int, quiet: float = 2.0) -> None:
    """Read every client until each holds ``at_least`` frames and nothing more came for
    ``quiet`` seconds (so any frame beyond the window would be seen too)."""
    selector = selectors.DefaultSelector()
    for client in clients:
        client.sock.setblocking(False)
        selector.register(client.sock, selectors.EVENT_READ, client)
    deadline = time.monotonic() + 120
    last_data = time.monotonic()
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            chunk = key.fileobj.recv(65536)
            if not chunk:
                selector.unregister(key.fileobj)
                continue
            key.data.received += chunk
            last_data = time.monotonic()
        settled = time.monotonic() - last_data > quiet
        if settled and all(len(client.text_frames()) >= at_least for client in clients):
            break
    selector.close()


# ---------------------------------------------------------------------------------------------
# The reading sockets, in Chromium: each keeps what a page would show, and acks every frame

OPEN_SOCKETS_JS = """
([url, count]) => {
  const slow = (window.__slow = {records: [], sentinels: new Set(), open: 0});
  const template = document.createElement("template");
  for (let i = 0; i < count; i++) {
    const record = {frames: 0, tasksFrames: 0, overflows: 0, state: new Map(),
                    caughtUp: false, closed: false};
    const socket = new WebSocket(url);
    socket.onopen = () => { slow.open++; };
    socket.onclose = () => { record.closed = true; };
    socket.onmessage = (event) => {
      record.frames++;
      if (event.data.indexOf('id="live-tasks"') >= 0) {
        template.innerHTML = event.data;
        const signal = template.content.firstElementChild;
        record.tasksFrames++;
        if (signal.dataset.overflow === "1") {
          record.overflows++;
          record.state.clear();  // a page reloads its views: nothing it knew still matters
        }
        for (const [id, status] of Object.entries(JSON.parse(signal.dataset.statuses))) {
          record.state.set(id, status);
          if (slow.sentinels.has(id)) record.caughtUp = true;
        }
      }
      socket.send("ack");
    };
    slow.records.push(record);
  }
}
"""

# What each socket's page would show, against the tasks' final statuses: a status it holds
# must be the final one; a task it holds nothing about is fine only if an overflow made it
# reload.
CHECK_SOCKETS_JS = """
(final) => window.__slow.records.map((record) => {
  let wrong = 0, missing = 0;
  for (const [id, status] of Object.entries(final)) {
    if (record.state.has(id)) { if (record.state.get(id) !== status) wrong++; }
    else if (record.overflows === 0) missing++;
  }
  return {frames: record.frames, tasksFrames: record.tasksFrames, overflows: record.overflows,
          caughtUp: record.caughtUp, closed: record.closed, wrong, missing};
})
"""


def wait_until(condition, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout:g} s waiting for {what}"
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# The burst


def move_tasks(rounds: int) -> list[str]:
    """Tasks enqueued, claimed and completed a hundred at a time; returns their ids. A round's
    steps are apart, so most frames list 100 to 200 tasks (never more: no overflow)."""
    ids: list[str] = []
    try:
        for _ in range(rounds):
            batch = queue.enqueue_many([{"type": "echo"} for _ in range(ROUND_TASKS)])
            ids += batch
            time.sleep(ROUND_PAUSE)
            claimed = queue.claim(dispatcher="burst", batch=ROUND_TASKS)
            assert sorted(row["id"] for row in claimed) == sorted(batch)
            time.sleep(ROUND_PAUSE)
            done = queue.complete_many(
                dispatcher="burst", results=[(row["id"], row["attempts"], {}) for row in claimed]
            )
            assert set(done.values()) == {"COMPLETED"}
            time.sleep(ROUND_PAUSE)
        return ids
    finally:
        connections.close_all()


def test_slow_consumers_cost_the_server_a_window_of_frames_each(server, page):
    process, url = server
    port = urlsplit(url).port
    log_in(page, url)
    page.wait_for_selector("#live-indicator[data-state='on']", timeout=10_000)
    (session_id,) = [c["value"] for c in page.context.cookies() if c["name"] == "sessionid"]

    stalled = [StalledClient(url, session_id) for _ in range(STALLED_SOCKETS)]
    page.evaluate(
        OPEN_SOCKETS_JS, [url.replace("http://", "ws://") + "/ws/dashboard/", READING_SOCKETS]
    )
    wait_until(
        lambda: page.evaluate("window.__slow.open") == READING_SOCKETS, 60, "Chromium's sockets"
    )

    # Warm-up: rounds until every reading socket has had a window of tasks frames, so every
    # stalled client's window is full too (the same frames were offered to all).
    task_ids = []
    while not page.evaluate(f"window.__slow.records.every(r => r.tasksFrames >= {flow.WINDOW})"):
        task_ids += in_thread(move_tasks, 1)
        assert len(task_ids) <= 30 * ROUND_TASKS, "the reading sockets get no frames"

    memory = PeakMemory(process.pid, port)
    memory.start()
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:  # not in_thread: Playwright's loop must stay free
        task_ids += pool.submit(move_tasks, BURST_ROUNDS).result()
    burst_seconds = time.monotonic() - started

    # Catching up: a task changed after the burst (a sentinel) reaches a socket only after
    # everything before it. Its frame can be an overflow for a socket far behind, so a new
    # sentinel follows every few seconds until every socket has seen one listed.
    deadline = time.monotonic() + 120
    while True:
        sentinel = in_thread(queue.enqueue, type="echo", description="sentinel")
        page.evaluate("id => window.__slow.sentinels.add(id)", sentinel["id"])
        try:
            wait_until(
                lambda: page.evaluate("window.__slow.records.every(r => r.caughtUp)"),
                5,
                "every Chromium socket to see a sentinel",
            )
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise

    growth = memory.finish()
    queued = send_queues_mb(port)
    read_everything(stalled, at_least=flow.WINDOW)
    sockets = page.evaluate(CHECK_SOCKETS_JS, dict.fromkeys(task_ids, "COMPLETED"))
    frames = sorted(record["tasksFrames"] for record in sockets)
    print(
        f"\n{len(task_ids)} tasks; burst of {BURST_ROUNDS * ROUND_TASKS} in {burst_seconds:.1f} s."
        f"\ndaphne: RSS {rss_mb(process.pid):.1f} MB, {queued:.1f} MB queued on its sockets;"
        f" grew by {growth:.1f} MB during the burst."
        f"\nChromium sockets: {frames[0]}..{frames[-1]} tasks frames each; stalled clients: "
        f"{sorted({len(client.text_frames()) for client in stalled})} frames each"
    )

    assert growth < MEMORY_GROWTH_BOUND_MB, f"daphne grew by {growth:.1f} MB during the burst"
    # Every stalled client got exactly one window of frames, however long the burst.
    for client in stalled:
        received = client.text_frames()
        assert len(received) == flow.WINDOW, [frame[:80] for frame in received]
        for frame in received:
            assert 'id="coordinator-badge"' in frame or told(frame).total > 0
        client.sock.close()
    # Every Chromium socket followed the whole burst to the tasks' final statuses.
    for record in sockets:
        assert record["caughtUp"] and not record["closed"], record
        assert record["wrong"] == 0 and record["missing"] == 0, record
        assert record["tasksFrames"] > flow.WINDOW, record
    # The dashboard page's own socket (dashboard.js acknowledging) kept it live throughout.
    page.wait_for_function(
        "n => document.querySelector('.count.count-completed .count-n')?.textContent.trim() === n",
        arg=str(len(task_ids)),
        timeout=30_000,
    )


def test_a_hidden_tab_acks_the_frames_it_drops_and_is_live_when_shown(live_url, page):
    log_in(page, live_url)
    page.goto(f"{live_url}/dashboard/tasks/")
    page.wait_for_selector("#live-indicator[data-state='on']", timeout=10_000)
    page.evaluate(
        """() => {
            window.__frames = 0;
            window.__swaps = 0;
            document.addEventListener("htmx:wsBeforeMessage", () => { window.__frames++; });
            document.addEventListener("htmx:afterSwap", () => { window.__swaps++; });
        }"""
    )
    set_hidden(page, True)
    # More frames than the window while hidden: each dropped, each acknowledged.
    for frames in range(1, 2 * flow.WINDOW + 1):
        in_thread(queue.enqueue, type="echo")
        wait_until(
            lambda expected=frames: page.evaluate("window.__frames") >= expected,
            10,
            "a frame while hidden",
        )
    swaps = page.evaluate("window.__swaps")
    set_hidden(page, False)
    # Shown: the page refreshes what it missed; what changes after that comes by frame.
    wait_until(lambda: page.evaluate("window.__swaps") > swaps, 10, "the catch-up refresh")
    task = in_thread(queue.enqueue, type="echo", description="after the tab is shown")
    page.locator(f"#task-{task['id']}").wait_for(timeout=10_000)


def set_hidden(page, hidden: bool) -> None:
    """Play the browser hiding or showing the tab (headless Chromium never hides it)."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )
