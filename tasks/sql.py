"""SQL plumbing for the queue modules: the few places where PostgreSQL and SQLite differ.

:class:`Dialect` runs the statements that ``tasks.queue`` and ``tasks.heartbeats`` write, on
either database: it picks the cursor, the SQL for "now", the parameter forms (ids, JSON,
timestamps, interval seconds) and converts result rows to plain dicts. It holds no statement
of its own; every statement that changes a task's status lives in ``tasks.queue``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.utils.dateparse import parse_datetime

SQLITE_NOW = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')"

_DATETIME_COLUMNS = {"locked_at", "lease_expires_at", "run_after", "created_at", "updated_at"}
_JSON_COLUMNS = {"params", "result", "error_history"}
# Row converters by (PostgreSQL?, column names): a statement's columns never change.
_CONVERTERS: dict[tuple[bool, tuple[str, ...]], list] = {}
# The result columns of each statement text that returned rows (bounded: statements built
# with one placeholder per item vary in text).
_COLUMN_NAMES: dict[str, tuple[str, ...]] = {}


class Dialect:
    """One database alias's connection, seen through the differences the queue cares about."""

    def __init__(self, using: str):
        self.connection = connections[using]
        self.postgres = self.connection.vendor == "postgresql"

    def cursor(self):
        if not self.postgres:
            return self.connection.cursor()
        # A plain psycopg cursor binds on the server and can prepare statements, which the
        # queue's hot path needs; Django's default ClientCursor does neither. One is kept per
        # connection (connections are per thread), with psycopg's C timestamptz loader in
        # place of Django's Python one: the session time zone is already UTC.
        self.connection.ensure_connection()
        raw = self.connection.connection
        cursor = getattr(self.connection, "_seedcore_cursor", None)
        if cursor is None or cursor.closed or cursor.connection is not raw:
            import psycopg
            from psycopg.types.datetime import TimestamptzLoader

            cursor = psycopg.Cursor(raw)
            cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
            self.connection._seedcore_cursor = cursor
        return contextlib.nullcontext(cursor)

    @property
    def prepare_hot(self) -> bool | None:
        """Whether to prepare the hot-path statements (claim, batch completion): yes, unless
        the database OPTIONS set ``prepare_threshold`` (None turns preparing off, e.g.
        behind a pooler that cannot keep prepared statements)."""
        options = self.connection.settings_dict.get("OPTIONS", {})
        return None if "prepare_threshold" in options else True

    @property
    def now(self) -> str:
        return "now()" if self.postgres else SQLITE_NOW

    def now_plus(self) -> str:
        """SQL for now + N seconds, N bound as one parameter (see :meth:`seconds`)."""
        if self.postgres:
            return "(now() + %s * interval '1 second')"
        return "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', %s)"

    def seconds(self, value: float) -> Any:
        return value if self.postgres else f"{value:+.6f} seconds"

    def id(self, task_id: str | uuid.UUID) -> Any:
        value = task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))
        return value if self.postgres else value.hex

    def ids(self, task_ids: Iterable[str | uuid.UUID]) -> list[Any]:
        return [self.id(task_id) for task_id in task_ids]

    def json(self, value: Any) -> Any:
        if self.postgres:
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return json.dumps(value)

    def timestamp(self, value: datetime) -> Any:
        return value if self.postgres else self.connection.ops.adapt_datetimefield_value(value)

    def in_list(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``IN (…)`` with one placeholder per value; works on both databases."""
        return "(" + ", ".join(["%s"] * len(values)) + ")", list(values)

    def rows(self, names: tuple[str, ...], values: list[tuple]) -> list[dict[str, Any]]:
        """Plain dicts, each column converted by a converter picked once per column."""
        convert = _CONVERTERS.get((self.postgres, names))
        if convert is None:
            convert = _CONVERTERS[self.postgres, names] = [self._converter(n) for n in names]
        return [
            {
                name: value if conv is None or value is None else conv(value)
                for name, conv, value in zip(names, convert, row, strict=True)
            }
            for row in values
        ]

    def _converter(self, column: str):
        if column == "id":
            return str if self.postgres else _uuid_text
        if column in _DATETIME_COLUMNS:
            return None if self.postgres else sqlite_datetime
        if column in _JSON_COLUMNS:
            return json_value
        if column == "cancel_requested" and not self.postgres:
            return bool
        return None

    def fetch(
        self, sql: str, params: Sequence[Any], *, prepare: bool | None = None
    ) -> list[dict[str, Any]]:
        with self.cursor() as cursor:
            self._execute(cursor, sql, params, prepare)
            # The column names of a statement never change; psycopg builds a fresh
            # description on every access, which the hot path (a claim) can skip.
            names = _COLUMN_NAMES.get(sql)
            if names is None:
                description = cursor.description
                if description is None:
                    return []
                names = tuple(column[0] for column in description)
                if len(_COLUMN_NAMES) < 1000:
                    _COLUMN_NAMES[sql] = names
            return self.rows(names, cursor.fetchall())

    def execute(self, sql: str, params: Sequence[Any], *, prepare: bool | None = None) -> int:
        with self.cursor() as cursor:
            self._execute(cursor, sql, params, prepare)
            return cursor.rowcount

    def _execute(self, cursor, sql: str, params: Sequence[Any], prepare: bool | None) -> None:
        if not self.postgres:
            cursor.execute(sql, params)  # Django's cursor logs it itself when DEBUG is on
            return
        # As Django's own cursors do: psycopg's errors become django.db's (OperationalError…),
        # so callers handle one family whichever database they run on.
        with self.connection.wrap_database_errors:
            self._execute_postgres(cursor, sql, params, prepare)

    def _execute_postgres(
        self, cursor, sql: str, params: Sequence[Any], prepare: bool | None
    ) -> None:
        if not self.connection.queries_logged:
            cursor.execute(sql, params, prepare=prepare)
            return
        # The raw psycopg cursor bypasses Django's query log; keep DEBUG's log (and tests
        # counting queries) complete.
        start = time.monotonic()
        try:
            cursor.execute(sql, params, prepare=prepare)
        finally:
            self.connection.queries_log.append(
                {"sql": sql, "time": f"{time.monotonic() - start:.3f}"}
            )


def _uuid_text(value: Any) -> str:
    return str(uuid.UUID(str(value)))


def sqlite_datetime(value: Any) -> datetime:
    """A timestamp as SQLite hands it over (text, naive UTC) as an aware datetime."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # naive UTC


def json_value(value: Any) -> Any:
    """A JSON column's value as Python data."""
    # Django's PostgreSQL adapters and SQLite both hand JSON over as text.
    return json.loads(value) if isinstance(value, str | bytes) else value
