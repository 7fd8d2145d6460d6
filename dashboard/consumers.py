"""The dashboard's one websocket: for users who may read; joins the live groups and forwards
their frames.

Who may watch is checked at the handshake and again every ``SEEDCORE_SOCKET_RECHECK_SECONDS``
(5 s by default) from the session as stored now, so a socket closes within seconds of its
session ending (logout, expiry, a password change) or its user losing the viewer permission
(``tasks.permissions``).

Frames are HTML fragments rendered once per process by :mod:`dashboard.live`; the htmx ws
extension swaps them out of band. Each connection's :class:`dashboard.flow.Outbox` decides
what is sent now and what waits: the page answers every frame with ``ack``, and a page that
stops reading gets no more than ``flow.WINDOW`` frames (what follows is merged until it acks).
A client sending ``sync`` (a page shown again after being hidden) gets the monitor's latest
frame at once.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth

from dashboard import flow, live
from tasks.permissions import READ, user_may

GROUPS = (live.TASKS_GROUP, live.HEALTH_GROUP)
# Close code sent when a re-check fails (4000-4999 are free for applications; the page reconnects
# and the handshake then refuses it).
CLOSE_UNAUTHORIZED = 4403

logger = logging.getLogger("seedcore.dashboard")


def may_watch(user) -> bool:
    """Whether ``user`` may watch the dashboard: the one rule for the handshake and re-checks."""
    return user_may(user, READ)


def session_may_watch(session_key: str | None) -> bool:
    """Whether the session stored under ``session_key`` still belongs to a user who may watch.

    Read afresh (not the connection's cached session), through ``auth.get_user``, which also
    refuses a session whose password hash is stale."""
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return may_watch(auth.get_user(SimpleNamespace(session=store)))


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        # Permissions are read from the database, so in a worker thread.
        if not await database_sync_to_async(may_watch)(self.scope.get("user")):
            await self.close()  # before accept: the handshake is refused with 403
            return
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.outbox = flow.Outbox()
        self.monitor = live.ensure_started()
        for group in GROUPS:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.watch = asyncio.create_task(self._recheck_access())
        await self._send_latest_health()

    async def disconnect(self, code: int) -> None:
        watch = getattr(self, "watch", None)
        if watch is not None:
            watch.cancel()
        for group in GROUPS:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = (text_data or "").strip()
        if message == "ack":
            await self._send(self.outbox.ack())
        elif message == "sync":
            await self._send_latest_health()

    async def tasks_changed(self, event: dict) -> None:
        await self._send(self.outbox.offer_tasks(event["html"], event["batch"]))

    async def health_changed(self, event: dict) -> None:
        await self._send(self.outbox.offer_health(event["html"]))

    async def _recheck_access(self) -> None:
        """Close the socket once its session or its user no longer passes ``may_watch``."""
        while True:
            await asyncio.sleep(settings.SEEDCORE_SOCKET_RECHECK_SECONDS)
            try:
                allowed = await database_sync_to_async(session_may_watch)(self.session_key)
            except Exception:  # a database hiccup: keep the socket, try again next time
                logger.exception("re-checking a dashboard socket's session failed")
                continue
            if not allowed:
                await self.close(code=CLOSE_UNAUTHORIZED)
                return

    async def _send_latest_health(self) -> None:
        if self.monitor.latest_html:
            await self._send(self.outbox.offer_health(self.monitor.latest_html))

    async def _send(self, frames: list[str]) -> None:
        for frame in frames:
            await self.send(text_data=frame)
