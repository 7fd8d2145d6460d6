"""The dashboard websocket: who may connect, what reaches a browser, how bursts coalesce, and
how a page that stops reading is held to a window of frames."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from dashboard import flow, live
from dashboard.live import Batch
from seedcore_site.asgi import application
from tasks import queue
from tests.dashboard.conftest import told

ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture
def coordinator_down():
    """rundispatcher reported the Coordinator out of reach (organism.status; no Ray here)."""
    from django.conf import settings

    from organism import status

    error = "the Coordinator is not running"
    status.publish(namespace=settings.RAY_NAMESPACE, ping_ms=None, error=error, summary=None)


def _session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def _connect(*headers) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=list(headers))
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


def run(scenario) -> None:
    """Run a scenario in a fresh loop, then stop the relay and monitor it started and close
    the database connections its worker thread opened (so the test database can be dropped)."""

    async def wrapped():
        try:
            await scenario()
        finally:
            await live.stop()
            await database_sync_to_async(connections.close_all)()

    asyncio.run(wrapped())


async def _frame_mentioning(communicator: WebsocketCommunicator, text: str) -> str:
    """The next frame mentioning ``text``; every frame read is acknowledged, as pages do."""
    while True:
        frame = await communicator.receive_from(timeout=10)
        await communicator.send_to(text_data="ack")
        if text in frame:
            return frame


@pytest.mark.django_db(transaction=True)
def test_anonymous_websocket_is_refused():
    async def scenario():
        communicator, connected = await _connect(ORIGIN)
        assert not connected

    run(scenario)


@pytest.mark.django_db(transaction=True)
def test_users_without_the_viewer_permission_and_foreign_origins_are_refused(make_user):
    plain = _session_cookie(make_user("plain", None))
    staff_without_permissions = _session_cookie(make_user("staff", None, is_staff=True))
    viewer = _session_cookie(make_user("viewer", "viewer"))

    async def scenario():
        for cookie in (plain, staff_without_permissions):
            _, connected = await _connect(ORIGIN, cookie)
            assert not connected
        _, connected = await _connect((b"origin", b"http://evil.example"), viewer)
        assert not connected

    run(scenario)


@pytest.mark.django_db(transaction=True)
def test_a_viewer_receives_a_task_event_and_health(make_user, coordinator_down):
    cookie = _session_cookie(make_user("viewer", "viewer"))

    async def scenario():
        communicator, connected = await _connect(ORIGIN, cookie)
        assert connected
        try:
            health = await _frame_mentioning(communicator, 'id="coordinator-badge"')
            assert 'data-healthy="no"' in health
            # The relay starts watching when the first socket connects; give it a moment.
            await asyncio.sleep(1.0)
            task = await database_sync_to_async(queue.enqueue)(type="echo")
            frame = await _frame_mentioning(communicator, task["id"])
            assert 'id="live-tasks"' in frame and 'hx-swap-oob="true"' in frame
            await database_sync_to_async(queue.cancel)(task["id"])
            frame = await _frame_mentioning(communicator, "CANCELLED")
            assert task["id"] in frame
        finally:
            await communicator.disconnect()

    run(scenario)


@pytest.mark.django_db(transaction=True)
def test_a_page_that_stops_acking_gets_a_window_of_frames_then_one_merged_frame(
    make_user, coordinator_down
):
    cookie = _session_cookie(make_user("viewer", "viewer"))
    statuses = ["QUEUED", "RUNNING", "RETRY", "COMPLETED"]

    async def burst(batches: list[Batch]) -> None:
        layer = get_channel_layer()
        for batch in batches:
            await layer.group_send(live.TASKS_GROUP, live.tasks_message(batch))

    async def scenario():
        communicator, connected = await _connect(ORIGIN, cookie)
        assert connected
        try:
            # The monitor's first frame, acknowledged; it sends no other while nothing changes.
            await _frame_mentioning(communicator, 'id="coordinator-badge"')
            # A burst the page reads but never acknowledges: a window of frames, then silence.
            await burst(
                [
                    Batch({"moving": statuses[n % 4], f"new-{n}": "QUEUED"}, False, 2)
                    for n in range(30)
                ]
            )
            early = [told(await communicator.receive_from(timeout=10)) for _ in range(flow.WINDOW)]
            assert [batch.statuses["moving"] for batch in early] == statuses[: flow.WINDOW]
            assert await communicator.receive_nothing(timeout=2)
            # One ack: everything held back, as one frame with the latest statuses.
            await communicator.send_to(text_data="ack")
            caught_up = told(await communicator.receive_from(timeout=10))
            assert caught_up.statuses == {
                "moving": statuses[29 % 4],
                **{f"new-{n}": "QUEUED" for n in range(flow.WINDOW, 30)},
            }
            assert not caught_up.overflow and caught_up.total == 2 * (30 - flow.WINDOW)
            assert await communicator.receive_nothing(timeout=1)
            # Still a full window (one ack for five frames): more ids than a frame lists
            # come as one overflow, and the page reloads its views.
            wide = [{f"wide-{n}-{k}": "QUEUED" for k in range(150)} for n in range(3)]
            await burst([Batch(ids, False, 150) for ids in wide])
            assert await communicator.receive_nothing(timeout=2)
            await communicator.send_to(text_data="ack")
            assert told(await communicator.receive_from(timeout=10)) == Batch({}, True, 450)
            assert await communicator.receive_nothing(timeout=1)
        finally:
            await communicator.disconnect()

    run(scenario)


# ---------------------------------------------------------------------------------------------
# Coalescing and the monitor's change detection (no database, no sockets)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_becomes_one_frame_per_interval():
    clock = FakeClock()
    coalescer = live.Coalescer(interval=0.3, max_ids=200, clock=clock)
    coalescer.add((f"id-{n % 50}", "RUNNING") for n in range(10_000))
    coalescer.add([("id-7", "COMPLETED")])
    batch = coalescer.take()
    assert batch is not None and batch.total == 10_001 and not batch.overflow
    assert len(batch.statuses) == 50 and batch.statuses["id-7"] == "COMPLETED"
    coalescer.add([("id-1", "FAILED")])
    clock.now = 0.2
    assert coalescer.take() is None  # too soon after the last frame: held back
    clock.now = 0.31
    later = coalescer.take()
    assert later is not None and later.statuses == {"id-1": "FAILED"}
    clock.now = 5.0
    assert coalescer.take() is None  # nothing pending, nothing sent


def test_too_many_tasks_overflow_into_a_reload_signal():
    coalescer = live.Coalescer(interval=0.3, max_ids=100, clock=FakeClock())
    coalescer.add((f"id-{n}", "QUEUED") for n in range(10_000))
    batch = coalescer.take()
    assert batch.overflow and batch.statuses == {} and batch.total == 10_000
    frame = live.tasks_frame(batch)
    assert 'data-overflow="1"' in frame and 'data-total="10000"' in frame


def test_a_gap_in_the_feed_makes_pages_reload():
    coalescer = live.Coalescer(interval=0.3, max_ids=100, clock=FakeClock())
    coalescer.add([("id-1", "QUEUED")])
    coalescer.add_gap()
    batch = coalescer.take()
    assert batch.overflow and batch.statuses == {}


def test_notify_payloads_are_parsed_and_bad_ones_ignored():
    payload = json.dumps([["a1", "QUEUED", "echo"], ["b2", "FAILED", "fail"]])
    assert live.parse_notify_payload(payload) == [("a1", "QUEUED"), ("b2", "FAILED")]
    assert live.parse_notify_payload("not json") == []
    assert live.parse_notify_payload("[1]") == []


def test_the_monitor_broadcasts_only_what_changed():
    samples = []

    async def sample():
        return samples.pop(0)

    def snapshot(healthy: bool, ping_ms: float | None, beat_age: float) -> dict:
        return {
            "coordinator": {"healthy": healthy, "ping_ms": ping_ms, "error": None, "summary": None},
            "dispatchers": [
                {
                    "name": "d1",
                    "node": "n",
                    "pid": 1,
                    "in_flight": 0,
                    "processed": 3,
                    "alive": True,
                    "beat_age": beat_age,
                    "last_beat_at": None,
                }
            ],
        }

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(live.HEALTH_GROUP, channel)
        monitor = live.Monitor(sample=sample)
        samples.extend(
            [snapshot(True, 2.0, 0.5), snapshot(True, 3.0, 1.5), snapshot(False, None, 2.5)]
        )
        assert await monitor.tick()  # the first sample is news
        first = await asyncio.wait_for(layer.receive(channel), 2)
        assert 'data-healthy="yes"' in first["html"] and "d1" in first["html"]
        assert not await monitor.tick()  # ping jitter and a newer heartbeat are not
        assert await monitor.tick()  # the Coordinator going down is
        down = await asyncio.wait_for(layer.receive(channel), 2)
        assert down["type"] == "health.changed" and 'data-healthy="no"' in down["html"]
        assert monitor.latest_html == down["html"]
        await layer.group_discard(live.HEALTH_GROUP, channel)

    run(scenario)


async def _closed_within(communicator: WebsocketCommunicator, seconds: float) -> bool:
    """Whether the server closes the socket within ``seconds`` (frames read meanwhile are
    acknowledged, as pages do)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if communicator.output_queue.empty():  # a timed-out receive would stop the consumer
            await asyncio.sleep(0.05)
            continue
        output = communicator.output_queue.get_nowait()
        if output["type"] == "websocket.close":
            return True
        await communicator.send_to(text_data="ack")
    return False


def _logged_in(user) -> tuple[Client, tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return client, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def assert_socket_closes_after(cookie, revoke, *, stays_open_first: bool = True) -> None:
    """Open a socket with ``cookie``; it stays open across several re-checks while the session
    lives, then closes within seconds of ``revoke()`` (run in a worker thread)."""

    async def scenario():
        communicator, connected = await _connect(ORIGIN, cookie)
        assert connected
        try:
            if stays_open_first:
                assert not await _closed_within(communicator, 1.0)
            await database_sync_to_async(revoke)()
            assert await _closed_within(communicator, 3.0)
        finally:
            await communicator.disconnect()

    run(scenario)


@pytest.mark.django_db(transaction=True)
def test_a_socket_closes_soon_after_logout(make_user, settings, coordinator_down):
    settings.SEEDCORE_SOCKET_RECHECK_SECONDS = 0.2
    user = make_user("viewer", "viewer")
    client, cookie = _logged_in(user)
    assert_socket_closes_after(cookie, client.logout)


def _leave_every_group(user) -> None:
    user.groups.clear()


def _deactivate(user) -> None:
    type(user).objects.filter(pk=user.pk).update(is_active=False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("demote", [_leave_every_group, _deactivate])
def test_a_socket_closes_soon_after_its_user_loses_the_viewer_permission(
    make_user, settings, coordinator_down, demote
):
    settings.SEEDCORE_SOCKET_RECHECK_SECONDS = 0.2
    user = make_user("viewer", "viewer")
    _, cookie = _logged_in(user)
    assert_socket_closes_after(cookie, lambda: demote(user))


@pytest.mark.django_db(transaction=True)
def test_a_superusers_socket_closes_soon_after_they_stop_being_one(
    make_user, settings, coordinator_down
):
    """A superuser holds every permission without a group; losing the flag loses them."""
    settings.SEEDCORE_SOCKET_RECHECK_SECONDS = 0.2
    user = make_user("root", None, is_superuser=True)
    _, cookie = _logged_in(user)
    assert_socket_closes_after(
        cookie, lambda: type(user).objects.filter(pk=user.pk).update(is_superuser=False)
    )


@pytest.mark.django_db(transaction=True)
def test_a_socket_closes_soon_after_a_password_change(make_user, settings, coordinator_down):
    """Changing the password ends the user's other sessions (Django's session hash), and so
    their sockets."""
    settings.SEEDCORE_SOCKET_RECHECK_SECONDS = 0.2
    user = make_user("viewer", "viewer")
    _, cookie = _logged_in(user)

    def change_password():
        user.set_password("another")
        user.save()

    assert_socket_closes_after(cookie, change_password, stays_open_first=False)
