"""The hot path's statements are prepared once per connection; the ORM's are left as Django
has them (tasks.sql)."""

from __future__ import annotations

import pytest
from django.db import connection

from tasks import queue
from tasks.models import Task
from tasks.sql import fetch

pytestmark = pytest.mark.django_db(transaction=True)

CLAIM_START = queue.claim_statement()[:40]
ENQUEUE_START = queue._ENQUEUE_SQL[:40]


def prepared() -> list[str]:
    rows = fetch("SELECT statement FROM pg_prepared_statements")
    return [row["statement"] for row in rows]


def test_the_claim_and_the_insert_are_prepared_on_first_use_and_orm_queries_are_not():
    connection.close()
    for _ in range(3):
        queue.enqueue(type="echo")
        assert len(queue.claim(dispatcher="d", batch=5)) == 1
        list(Task.objects.filter(type="echo"))
    statements = prepared()
    assert [text for text in statements if text.startswith(CLAIM_START)] != []
    assert [text for text in statements if text.startswith(ENQUEUE_START)] != []
    assert not [text for text in statements if 'FROM "tasks"' in text]


def test_prepare_threshold_none_in_the_database_options_turns_preparing_off():
    # Behind a pooler in transaction mode a prepared statement may land on another server
    # connection; OPTIONS {"prepare_threshold": None} is how a deployment says so.
    connection.close()
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["prepare_threshold"] = None
    try:
        queue.enqueue(type="echo")
        assert len(queue.claim(dispatcher="d", batch=5)) == 1
        assert prepared() == []
    finally:
        del options["prepare_threshold"]
        connection.close()


def test_the_claims_generic_plan_never_reads_the_whole_table():
    # Prepared, the claim may run a generic plan, which cannot know its LIMIT and guesses a
    # tenth of the claimable rows: it must still reach each claimed row by its key, not hash
    # the picked rows against a read of the whole table.
    import re

    from tests.plans import root, tasks_nodes

    queue.enqueue_many([{"type": "echo"}] * 5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks")
        numbered = iter(range(1, 4))
        text = re.sub("%s", lambda _: f"${next(numbered)}", queue.claim_statement())
        cursor.execute(f"PREPARE generic_claim(int, text, float8) AS {text}")
        try:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE generic_claim(50, 'd', 90)")
            plan = root(cursor.fetchone()[0])
        finally:
            cursor.execute("RESET plan_cache_mode")
            cursor.execute("DEALLOCATE generic_claim")
    scans = [node["Node Type"] for node in tasks_nodes(plan)]
    assert scans and "Seq Scan" not in scans, scans
