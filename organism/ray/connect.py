"""Connecting a process (rundispatcher, tests) to Ray. Nothing here runs at import.

The one entry point is :func:`ensure_connected`. RAY_ADDRESS (settings.RAY_ADDRESS) names a
cluster; unset, a process finds the local cluster that ``rundispatcher`` started, and only
``rundispatcher`` may start one (``start_local=True``).

Token authentication (Ray >= 2.52): a client of a cluster that enforces it needs RAY_AUTH_MODE=token
and the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); a connection refused for
want of it is reported as :class:`RayUnavailable` naming RAY_AUTH_TOKEN.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from django.conf import settings


class RayUnavailable(Exception):
    """Ray cannot be reached; the message says how to fix it."""


def actor_env_vars() -> dict[str, str]:
    """The runtime_env of SeedCore's actors: settings, never secrets.

    Ray shows a job's runtime_env to anyone who can read its dashboard or state API, so
    DATABASE_URL (with the database's password) and SECRET_KEY are not in it: actors read them
    from their process's environment, which a Ray worker inherits from its node. On Kubernetes
    the Ray pods get both from the ``seedcore-secrets`` Secret (k8s/raycluster.yaml); a local
    Ray, started by :func:`ensure_connected`, inherits them from the process that starts it
    (:func:`local_node_env`).
    """
    env = {}
    env["DJANGO_SETTINGS_MODULE"] = os.environ.get(
        "DJANGO_SETTINGS_MODULE", "seedcore_site.settings"
    )
    env["RAY_NAMESPACE"] = settings.RAY_NAMESPACE
    for name, value in os.environ.items():
        if name.startswith("SEEDCORE_") and not _may_be_secret(name):
            env[name] = value
    # As this process resolved it: with DATABASE_URL unset DEBUG defaults on (and the
    # development key lives in var/), but an actor given a URL would default DEBUG off.
    env["DEBUG"] = "1" if settings.DEBUG else "0"
    env["SEEDCORE_VAR_DIR"] = str(settings.VAR_DIR)
    root = str(settings.BASE_DIR)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return env


_SECRET_HINTS = ("URL", "PASSWORD", "SECRET", "TOKEN", "KEY")


def _may_be_secret(name: str) -> bool:
    """A SEEDCORE_ variable that may hold a credential (SEEDCORE_TEST_POSTGRES_URL, say)."""
    return any(hint in name.upper() for hint in _SECRET_HINTS)


def local_node_env() -> dict[str, str]:
    """What a local Ray's workers must inherit from the process that starts it.

    The database is always named by URL: an actor reaches the embedded server through the
    socket this process already started, and never starts one itself. SECRET_KEY, when set,
    is in this process's environment already.
    """
    from django.db import connections

    from seedcore_site.database import database_url

    return {"DATABASE_URL": database_url(connections["default"].settings_dict)}


@contextlib.contextmanager
def node_environment(env: dict[str, str]) -> Iterator[None]:
    """Put ``env`` in this process's environment while a local Ray starts (its raylet, which
    starts every worker, copies the environment then), and restore it afterwards."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_connected(address: str | None = None, *, start_local: bool = False) -> None:
    """Connect this process to Ray once, in SeedCore's namespace."""
    import ray
    from ray.exceptions import AuthenticationError

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
    check_token_settings()
    try:
        if address:
            ray.init(address=address, **kwargs)
        elif start_local:
            # "local" always starts a fresh cluster; a bare ray.init() would join any Ray that
            # happens to run on this machine.
            with node_environment(local_node_env()):
                ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address="auto", **kwargs)
    except AuthenticationError as exc:
        raise RayUnavailable(f"Ray refused the connection: {exc.message}. {TOKEN_HINT}") from None
    except ConnectionError as exc:
        where = address or "a local cluster"
        if address and not token_given():
            # A cluster refusing a client without its token looks like this too.
            raise RayUnavailable(f"cannot reach Ray at {where} ({exc}). {TOKEN_HINT}") from None
        raise RayUnavailable(
            f"cannot reach Ray at {where} ({exc}); start it with `python manage.py rundispatcher`"
        ) from None


TOKEN_HINT = (
    "If the cluster uses token authentication (Ray turns it on when RAY_AUTH_MODE=token, or when "
    "~/.ray/auth_token exists as `ray start` runs), set RAY_AUTH_TOKEN to its token "
    "(`ray get-auth-token` on the head prints it) or RAY_AUTH_TOKEN_PATH to a file holding it"
)
TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def token_given() -> bool:
    return any(os.environ.get(name, "").strip() for name in TOKEN_SOURCES)


def check_token_settings() -> None:
    """Refuse a token that Ray would silently not send.

    Ray 2.60 sends a token only when RAY_AUTH_MODE=token, read when ``ray`` is imported: with
    the mode unset, a client given an explicit address sends none even with RAY_AUTH_TOKEN set,
    and the cluster answers with a bare ConnectionError after about 20 seconds of retries.
    """
    if token_given() and not os.environ.get("RAY_AUTH_MODE", "").strip():
        raise RayUnavailable(
            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) is set but RAY_AUTH_MODE is not: Ray sends "
            "the token only with RAY_AUTH_MODE=token; set both"
        )


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
