"""Reading SeedCore's configuration from the environment.

Every value is parsed once, at settings import, and a malformed one stops start-up with a
message naming the variable (ImproperlyConfigured), never a bare ValueError from deep inside.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

DEFAULT_RAY_NAMESPACE = "seedcore-dev"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off"
    )


def env_int(
    name: str, default: int, *, minimum: int = 0, environ: Mapping[str, str] = os.environ
) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_float(
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    environ: Mapping[str, str] = os.environ,
) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be between {minimum} and {maximum}")
    return value


def env_list(name: str, default: list[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    raw = environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def ray_namespace(environ: Mapping[str, str] = os.environ) -> str:
    """The Ray namespace every SeedCore actor lives in: RAY_NAMESPACE, else SEEDCORE_NS."""
    for name in ("RAY_NAMESPACE", "SEEDCORE_NS"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return DEFAULT_RAY_NAMESPACE


def development_secret_key(debug: bool, var_dir: Path) -> str:
    """The key for ``SECRET_KEY``-less development: made once and kept in ``var/``, so
    sessions survive restarts and every process of a checkout signs alike. Never used with
    ``DEBUG`` off: production must set ``SECRET_KEY``."""
    if not debug:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string, "
            "or set DEBUG=1 for local development."
        )
    path = var_dir / "development-secret-key"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        # O_EXCL: two processes starting at once keep one key, the first one written.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        time.sleep(0.05)
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key


# Placeholders shipped in examples: a deployment that kept one runs with a secret everyone knows.
PLACEHOLDER_PREFIX = "change-me"
SECRET_KEY_MIN_LENGTH = 50
RAY_TOKEN_MIN_LENGTH = 32


def refuse_weak_secret(name: str, value: str, minimum: int) -> None:
    """With ``DEBUG`` off, a secret shorter than ``minimum`` or still a ``change-me``
    placeholder stops start-up (ImproperlyConfigured naming the variable, never the value)."""
    if value.strip().lower().startswith(PLACEHOLDER_PREFIX):
        raise ImproperlyConfigured(
            f"{name} is still the placeholder; set it to a long random string "
            "(e.g. `openssl rand -hex 32`)"
        )
    if len(value) < minimum:
        raise ImproperlyConfigured(
            f"{name} is {len(value)} characters; with DEBUG off it must be at least {minimum} "
            "(e.g. `openssl rand -hex 32`)"
        )


def check_production_secrets(debug: bool, environ: Mapping[str, str] = os.environ) -> None:
    """``SECRET_KEY`` and, when set, the Ray token (``RAY_AUTH_TOKEN``): refused when weak,
    unless ``DEBUG`` is on."""
    if debug:
        return
    refuse_weak_secret("SECRET_KEY", environ.get("SECRET_KEY", ""), SECRET_KEY_MIN_LENGTH)
    token = environ.get("RAY_AUTH_TOKEN")
    if token is not None:
        refuse_weak_secret("RAY_AUTH_TOKEN", token, RAY_TOKEN_MIN_LENGTH)
