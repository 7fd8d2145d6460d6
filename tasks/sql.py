"""How SeedCore talks to PostgreSQL outside the ORM: statements and notifications.

``tasks.queue``, ``tasks.heartbeats`` and ``tasks.selectors`` write their statements in
plain PostgreSQL and run them here, on a plain psycopg cursor of the Django connection rather
than Django's cursor: it binds parameters on the server, can prepare the hot-path statements
(claim, batch completion) and loads values straight into what callers want (ids as text, JSON
as Python data, timestamps through psycopg's C loader). Errors still come out as Django's
(``django.db.OperationalError``…) and, with DEBUG on, every statement still joins Django's
query log. This module holds no statement of its own; every statement that changes a task's
status lives in ``tasks.queue``.

:func:`listen_forever` is the one LISTEN loop (the dashboard relay and each dispatcher's waker
run one): a connection of its own, kept up with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import Jsonb, JsonbLoader
from psycopg.types.string import TextLoader

log = logging.getLogger("seedcore.listen")

# The result columns of each statement text that returned rows (bounded, in case a caller
# ever builds statement texts that vary).
_COLUMN_NAMES: dict[str, tuple[str, ...]] = {}
_MAX_CACHED_STATEMENTS = 1000
# psycopg prepares a statement after this many runs unless told per statement (see _cursor).
_NEVER_BY_COUNT = 2**31 - 1


def fetch(
    sql: str, params: Sequence[Any] = (), *, using: str = DEFAULT_DB_ALIAS, prepare: bool = False
) -> list[dict[str, Any]]:
    """Run ``sql`` (``%s`` placeholders) and return its rows as plain dicts.

    ``prepare=True`` marks a hot-path statement: it is prepared on first use, unless the
    database OPTIONS set ``prepare_threshold`` (which then decides; None turns preparing off,
    e.g. behind a pooler that cannot keep prepared statements).
    """
    connection = connections[using]
    cursor = _cursor(connection)
    _execute(connection, cursor, sql, params, prepare)
    # A statement's column names never change; psycopg builds a fresh description on every
    # access, which the hot path (a claim) can skip.
    names = _COLUMN_NAMES.get(sql)
    if names is None:
        if cursor.description is None:
            return []
        names = tuple(column.name for column in cursor.description)
        if len(_COLUMN_NAMES) < _MAX_CACHED_STATEMENTS:
            _COLUMN_NAMES[sql] = names
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def execute(
    sql: str, params: Sequence[Any] = (), *, using: str = DEFAULT_DB_ALIAS, prepare: bool = False
) -> int:
    """Run ``sql`` for its effect; returns the number of rows it touched (see :func:`fetch`)."""
    connection = connections[using]
    cursor = _cursor(connection)
    _execute(connection, cursor, sql, params, prepare)
    return cursor.rowcount


def task_uuid(task_id: str | uuid.UUID) -> uuid.UUID:
    """A task id as a parameter; a malformed id raises ValueError here, not in the database."""
    return task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))


async def listen_forever(
    channel: str,
    *,
    on_listen: Callable[[], None],
    on_notify: Callable[[str], None],
    using: str = DEFAULT_DB_ALIAS,
    first_wait: float = 0.5,
    longest_wait: float = 15.0,
) -> NoReturn:
    """LISTEN on ``channel`` over a connection of its own until the calling task is cancelled.

    ``on_listen()`` runs each time LISTEN takes effect: NOTIFYs sent before it (or while the
    connection was down) are lost, so the caller looks again. ``on_notify(payload)`` runs for
    each notification. A lost connection is retried after a wait that doubles from
    ``first_wait`` to ``longest_wait``, and starts over once LISTEN succeeds again.
    """
    wait = first_wait
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                autocommit=True, **_own_connection_params(using)
            ) as conn:
                await conn.execute(f"LISTEN {channel}")
                wait = first_wait
                on_listen()
                async for notify in conn.notifies():
                    on_notify(notify.payload)
        except Exception as exc:  # a database restart must not end the listener
            log.warning("LISTEN %s: connection lost (%s); retrying in %g s", channel, exc, wait)
        await asyncio.sleep(wait)
        wait = min(wait * 2, longest_wait)


def _own_connection_params(using: str) -> dict[str, Any]:
    # Django's parameters for ``using`` (OPTIONS such as sslmode included), less Django's own
    # adapters and cursor class.
    params = connections[using].get_connection_params()
    for django_only in ("context", "cursor_factory", "prepare_threshold"):
        params.pop(django_only, None)
    return params


def _cursor(connection) -> psycopg.Cursor:
    # One plain psycopg cursor per Django connection (connections are per thread), made again
    # when Django reconnects. Its loaders replace Django's: ids as text, JSON decoded (Django
    # leaves jsonb as text for JSONField), and psycopg's C timestamptz loader in place of
    # Django's Python one (the session time zone is UTC already).
    connection.ensure_connection()
    raw = connection.connection
    cursor = getattr(connection, "_seedcore_cursor", None)
    if cursor is None or cursor.closed or cursor.connection is not raw:
        if raw.prepare_threshold is None and "prepare_threshold" not in _options(connection):
            # Django connects with prepare_threshold None, and psycopg then ignores
            # prepare=True too: the claim was parsed and planned afresh every time (0.3 of its
            # 0.5 ms on the server). A threshold no statement reaches keeps the ORM's own
            # statements unprepared, as Django has them, and lets ours be prepared.
            raw.prepare_threshold = _NEVER_BY_COUNT
        cursor = psycopg.Cursor(raw)
        cursor.adapters.register_loader("uuid", TextLoader)
        cursor.adapters.register_loader("jsonb", JsonbLoader)
        cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        connection._seedcore_cursor = cursor
    return cursor


def _options(connection) -> dict[str, Any]:
    return connection.settings_dict.get("OPTIONS", {})


def _execute(connection, cursor, sql: str, params: Sequence[Any], prepare: bool) -> None:
    # Preparing is psycopg's choice (None: the connection's prepare_threshold) unless this is a
    # hot-path statement and the database OPTIONS leave preparing to us.
    prepare_now = True if prepare and "prepare_threshold" not in _options(connection) else None
    # As Django's own cursors do: psycopg's errors become django.db's, so callers handle one
    # family of errors.
    with connection.wrap_database_errors:
        if not connection.queries_logged:
            cursor.execute(sql, params, prepare=prepare_now)
            return
        # The raw cursor bypasses Django's query log; keep DEBUG's log (and tests counting
        # queries) complete.
        start = time.monotonic()
        try:
            cursor.execute(sql, params, prepare=prepare_now)
        finally:
            connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - start:.3f}"})


__all__ = ["Jsonb", "execute", "fetch", "listen_forever", "task_uuid"]
