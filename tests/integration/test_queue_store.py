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


def seqscan(*, using: str) -> str:
    return fetch("SELECT current_setting('enable_seqscan') AS setting", using=using)[0]["setting"]


def test_both_sessions_plan_by_index_also_after_a_reconnect():
    store = QueueStore("store-test/2", DispatcherConfig())

    def settings() -> tuple[str, str]:
        return (
            asyncio.run(store._call(store._control, seqscan)),
            asyncio.run(store._call(store._writes, seqscan)),
        )

    try:
        assert settings() == ("off", "off")
        claim_pid = asyncio.run(store._call(store._control, backend_pid))
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [claim_pid])
        with pytest.raises(OperationalError):
            asyncio.run(store._call(store._control, seqscan))
        assert settings() == ("off", "off")  # the new session too
    finally:
        store.close()
    assert seqscan(using="default") == "on"  # everyone else keeps the planner's choice


def test_a_generic_claim_plan_made_on_a_small_table_reaches_rows_by_index():
    # The plan a dispatcher's prepared claim keeps until an ANALYZE: made while the table was
    # small, it read the whole table on every claim once the table had grown.
    import json
    import re

    queue.enqueue_many([{"type": "echo"}] * 3)
    numbered = iter(range(1, 4))
    text = re.sub("%s", lambda _: f"${next(numbered)}", queue.claim_statement())

    def scans_of_tasks() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tasks")
            cursor.execute(f"PREPARE small_claim(int, text, float8) AS {text}")
            try:
                cursor.execute("SET plan_cache_mode = force_generic_plan")
                cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE small_claim(50, 'd', 90)")
                plan = cursor.fetchone()[0]
            finally:
                cursor.execute("RESET plan_cache_mode")
                cursor.execute("DEALLOCATE small_claim")
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return _scans_of_tasks(plan[0]["Plan"])

    assert "Seq Scan" in scans_of_tasks()  # the planner's own choice on a small table
    queue.plan_by_index()
    try:
        assert "Seq Scan" not in scans_of_tasks()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
        connection.__dict__.pop("_seedcore_session_settings", None)


def _scans_of_tasks(plan: dict) -> list[str]:
    found = [plan["Node Type"]] if plan.get("Relation Name") == "tasks" else []
    for child in plan.get("Plans", []):
        found += _scans_of_tasks(child)
    return found
