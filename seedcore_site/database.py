"""Which PostgreSQL SeedCore uses: ``DATABASE_URL``'s, or the embedded one under ``var/``.

Both are plain Django database settings; the embedded one names the engine in
``seedcore_site.embedded_postgres``, which starts the server on the first connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from seedcore_site.embedded_postgres import default_server

EMBEDDED_ENGINE = "seedcore_site.embedded_postgres"
POSTGRES_ENGINES = ("django.db.backends.postgresql", EMBEDDED_ENGINE)


def database_settings(url: str, var_dir: Path) -> dict[str, Any]:
    """``DATABASES["default"]`` for ``url`` (``DATABASE_URL``), or the embedded server's when
    it is empty. Anything but PostgreSQL is refused with a message saying what to do."""
    url = url.strip()
    if not url:
        server = default_server(var_dir)
        return {
            "ENGINE": EMBEDDED_ENGINE,
            **server.connection_settings(),
            "DATA_DIR": str(server.data_dir),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        raise ImproperlyConfigured(
            f"DATABASE_URL={url!r}: SeedCore needs PostgreSQL (it claims tasks with FOR UPDATE "
            "SKIP LOCKED and wakes on LISTEN/NOTIFY). Set a postgres:// URL, or leave "
            "DATABASE_URL unset for an embedded PostgreSQL under var/."
        )
    try:
        parsed = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
    if parsed["ENGINE"] not in POSTGRES_ENGINES:
        raise ImproperlyConfigured(
            f"DATABASE_URL names {parsed['ENGINE']}: SeedCore needs PostgreSQL "
            "(postgres://user:password@host:5432/name), or leave it unset for an embedded one"
        )
    return parsed


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``postgres://`` URL for the database a connection uses (a test database included),
    for processes that must reach the same one (Ray actors, servers under test)."""
    user = quote(settings_dict.get("USER") or "postgres", safe="")
    password = settings_dict.get("PASSWORD")
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    host = quote(str(settings_dict.get("HOST") or "127.0.0.1"), safe="")
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{quote(settings_dict['NAME'], safe='')}"
