"""Connecting a process (web, rundispatcher, tests) to Ray. Nothing here runs at import.

The one entry point is :func:`ensure_connected`. RAY_ADDRESS (settings.RAY_ADDRESS) names a
cluster; unset, a process finds the local cluster that ``rundispatcher`` started, and only
``rundispatcher`` may start one (``start_local=True``).
"""

from __future__ import annotations

import os
import socket

from django.conf import settings


class RayUnavailable(Exception):
    """Ray cannot be reached; the message says how to fix it."""


def actor_env_vars() -> dict[str, str]:
    """Environment for SeedCore's actors so they load the same settings and database."""
    names = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "SECRET_KEY", "DEBUG", "RAY_NAMESPACE")
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.setdefault("DJANGO_SETTINGS_MODULE", "seedcore_site.settings")
    env["RAY_NAMESPACE"] = settings.RAY_NAMESPACE
    for name, value in os.environ.items():
        if name.startswith("SEEDCORE_"):
            env[name] = value
    root = str(settings.BASE_DIR)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return env


def ensure_connected(address: str | None = None, *, start_local: bool = False) -> None:
    """Connect this process to Ray once, in SeedCore's namespace."""
    import ray

    if ray.is_initialized():
        return
    address = address if address is not None else settings.RAY_ADDRESS
    kwargs = {
        "namespace": settings.RAY_NAMESPACE,
        "runtime_env": {"env_vars": actor_env_vars()},
        "log_to_driver": False,
    }
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        elif start_local:
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address="auto", **kwargs)
    except ConnectionError as exc:
        where = address or "a local cluster"
        raise RayUnavailable(
            f"cannot reach Ray at {where} ({exc}); start it with `python manage.py rundispatcher`"
        ) from None


REACHABLE_TIMEOUT = 5.0


def check_reachable(address: str, timeout: float = REACHABLE_TIMEOUT) -> None:
    """Fail fast on a ``host:port`` nothing listens on; ``ray.init`` retries for minutes."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and the like: ray.init resolves those itself, quickly
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(
            f"cannot reach Ray at {address} ({exc.strerror or exc}); check RAY_ADDRESS or "
            "--address, and that the Ray cluster is running"
        ) from None
