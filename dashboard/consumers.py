"""The dashboard's one websocket: staff only; joins the live groups and forwards their frames.

Frames are HTML fragments rendered once per process by :mod:`dashboard.live`; the htmx ws
extension swaps them out of band. Each connection's :class:`dashboard.flow.Outbox` decides
what is sent now and what waits: the page answers every frame with ``ack``, and a page that
stops reading gets no more than ``flow.WINDOW`` frames (what follows is merged until it acks).
A client sending ``sync`` (a page shown again after being hidden) gets the monitor's latest
frame at once.
"""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard import flow, live

GROUPS = (live.TASKS_GROUP, live.HEALTH_GROUP)


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close()  # before accept: the handshake is refused with 403
            return
        self.outbox = flow.Outbox()
        self.monitor = live.ensure_started()
        for group in GROUPS:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self._send_latest_health()

    async def disconnect(self, code: int) -> None:
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

    async def _send_latest_health(self) -> None:
        if self.monitor.latest_html:
            await self._send(self.outbox.offer_health(self.monitor.latest_html))

    async def _send(self, frames: list[str]) -> None:
        for frame in frames:
            await self.send(text_data=frame)
