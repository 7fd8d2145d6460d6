"""Fixtures for the fault suite: Ray clusters and an embedded PostgreSQL of its own.

These tests start and kill their own Ray clusters, so they cannot share a process with the
session ``ray_cluster`` fixture: run them in their own invocation,
``python -m pytest tests/faults -q`` (and ``--ignore=tests/faults`` in the main run).
Everything started here is stopped by process id; nothing here touches the machine's
PostgreSQL on 5432 or any Ray cluster it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from seedcore_site.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError
from tests.conftest import ROOT

FAULTS_SETTINGS = "tests.faults.settings"
# The `ray` command of the Python running the tests (a venv's bin/ need not be on PATH).
RAY_CLI = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(autouse=True)
def _own_process():
    import ray

    if ray.is_initialized():  # the session ray_cluster fixture ran earlier in this process
        pytest.fail("tests/faults start their own Ray: run `python -m pytest tests/faults`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def var_dir() -> Path:
    """A short, private scratch dir (Ray's socket paths must stay under ~100 characters)."""
    base = Path(os.environ.get("SEEDCORE_VAR_DIR") or tempfile.gettempdir())
    path = base / f"faults-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


# Retries in the suite's processes come quickly, so recoveries finish within the test.
BACKOFF_SECONDS = 0.2


def actor_env(database_url: str, namespace: str) -> dict[str, str]:
    """What every actor and ``rundispatcher`` process needs: the faults settings (so the
    ``record`` handler is registered), the database, quick retries and reaping."""
    return {
        "DJANGO_SETTINGS_MODULE": FAULTS_SETTINGS,
        "DATABASE_URL": database_url,
        "RAY_NAMESPACE": namespace,
        "SEEDCORE_BACKOFF_SECONDS": str(BACKOFF_SECONDS),
        "SEEDCORE_HEARTBEAT_SECONDS": "1",
        "SEEDCORE_HEARTBEAT_TIMEOUT": "6",
        "SEEDCORE_SUPERVISE_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


class PrivatePostgres(EmbeddedPostgres):
    """An embedded server on a TCP port of its own, restartable at the same address."""

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own (the embedded binaries) on a free port, never the
    server the rest of the suite uses; it has a ``seedcore`` database."""
    root = var_dir()
    server = PrivatePostgres(root / "pgdata", port=free_port(), durable=False)
    server.ensure_running()
    try:
        yield server
    finally:
        with contextlib.suppress(EmbeddedPostgresError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RayHead:
    address: str
    process: subprocess.Popen

    def stop(self) -> None:
        """End the head and the processes it started (its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_ray_head(temp_dir: Path, env: dict[str, str], num_cpus: int = 4) -> RayHead:
    """``ray start --head --block`` in a new process group, on free ports, in a temp dir of
    its own (so no other process's ``address="auto"`` ever finds it)."""
    port = free_port()
    command = [
        RAY_CLI, "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=open(temp_dir.parent / "ray-head.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    head = RayHead(f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head
        except OSError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                head.stop()
                log = temp_dir.parent / "ray-head.log"
                raise RuntimeError(f"ray head did not start; see {log}") from exc
            time.sleep(0.5)
