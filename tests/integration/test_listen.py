"""The LISTEN loop the dashboard relay and the dispatchers' waker share (tasks.sql)."""

import asyncio
import uuid

import psycopg
import pytest
from django.db import connection

from tasks.sql import listen_forever

pytestmark = pytest.mark.django_db(transaction=True)


async def _control_connection() -> psycopg.AsyncConnection:
    params = connection.get_connection_params()
    for django_only in ("context", "cursor_factory", "prepare_threshold"):
        params.pop(django_only, None)
    return await psycopg.AsyncConnection.connect(**params, autocommit=True)


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_listen_forever_passes_notifications_on_and_listens_again_after_a_lost_connection():
    channel = f"seedcore_test_{uuid.uuid4().hex[:8]}"

    async def scenario():
        listens: list[int] = []
        payloads: asyncio.Queue[str] = asyncio.Queue()
        listener = asyncio.create_task(
            listen_forever(
                channel,
                on_listen=lambda: listens.append(1),
                on_notify=payloads.put_nowait,
                first_wait=0.05,
            )
        )
        control = await _control_connection()
        try:
            await _until(lambda: len(listens) == 1)
            await control.execute(f"NOTIFY {channel}, 'before'")
            assert await asyncio.wait_for(payloads.get(), 5) == "before"

            # The database drops the listening connection (a restart, a failover).
            await control.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = %s",
                [f"LISTEN {channel}"],
            )
            await _until(lambda: len(listens) == 2)
            await control.execute(f"NOTIFY {channel}, 'after'")
            assert await asyncio.wait_for(payloads.get(), 5) == "after"
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await control.close()

    asyncio.run(scenario())
