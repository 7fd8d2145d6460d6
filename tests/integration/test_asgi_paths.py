"""The ASGI application's edges: bad static paths and unknown websocket paths are 404s (or
a refused handshake), never an exception."""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator

from seedcore_site.asgi import application

HOST = [(b"host", b"localhost"), (b"origin", b"http://localhost")]


@pytest.mark.parametrize(
    "path", ["/static/..%2f..", "/static/../../etc/passwd", "/static/%2e%2e/manage.py"]
)
def test_a_static_path_outside_the_static_files_is_a_404(path):
    communicator = HttpCommunicator(application, "GET", path, headers=HOST)
    response = asyncio.run(communicator.get_response(timeout=10))
    assert response["status"] == 404


def test_an_unknown_websocket_path_is_refused_without_an_exception():
    communicator = WebsocketCommunicator(application, "/ws/nope/", headers=HOST)
    connected, _ = asyncio.run(communicator.connect(timeout=10))
    assert connected is False


def test_an_unknown_websocket_path_is_a_404_where_the_server_allows_it():
    scope = {
        "type": "websocket",
        "path": "/somewhere/else",
        "raw_path": b"/somewhere/else",
        "query_string": b"",
        "headers": HOST,
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }

    async def handshake():
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "websocket.connect"})
        return await communicator.receive_output(timeout=10)

    start = asyncio.run(handshake())
    assert start["type"] == "websocket.http.response.start" and start["status"] == 404
