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
