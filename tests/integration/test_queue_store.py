"""A dispatcher's QueueStore keeps its connections, and replaces one the server dropped."""

from __future__ import annotations

import asyncio

import pytest
from django.db import OperationalError, connection

from organism.dispatcher import DispatcherConfig, QueueStore
from tasks import queue
from tasks.sql import fetch

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid(*, using: str) -> int:
    return fetch("SELECT pg_backend_pid() AS pid", using=using)[0]["pid"]


def test_claims_reuse_one_connection_and_a_dropped_one_is_replaced():
    store = QueueStore("store-test/1", DispatcherConfig())

    def pid() -> int:
        return asyncio.run(store._call(store._control, backend_pid))

    def claim() -> list:
        return asyncio.run(store.claim(5))[0]

    try:
        first = pid()
        queue.enqueue(type="echo")
        assert len(claim()) == 1
        assert pid() == first  # no reconnect between calls
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        queue.enqueue(type="echo")
        with pytest.raises(OperationalError):  # the server hung up: this call fails …
            claim()
        assert len(claim()) == 1  # … and the next one reconnects
        assert pid() != first
    finally:
        store.close()
