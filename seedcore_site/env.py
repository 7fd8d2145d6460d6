"""Reading SeedCore's configuration from the environment.

Every value is parsed once, at settings import, and a malformed one stops start-up with a
message naming the variable (ImproperlyConfigured), never a bare ValueError from deep inside.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

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
