"""Connecting to a Ray cluster that enforces token authentication (Ray >= 2.52).

A head of our own starts with RAY_AUTH_MODE=token and a token of its own, in a temp dir and a
HOME of its own, so neither the session's cluster nor ~/.ray/auth_token is involved; the clients
run ``organism.ray.connect.ensure_connected`` in subprocesses, as the bootstrap Job and
``rundispatcher`` would. Only the processes of that head are stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CLIENT = """
import django
django.setup()
from organism.ray.connect import RayUnavailable, ensure_connected
import ray
try:
    ensure_connected({address!r})
except RayUnavailable as exc:
    print("UNAVAILABLE:", exc)
else:
    print("CONNECTED:", ray.get(ray.put(41)) + 1)
"""

RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(home: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in RAY_VARS}
    env["HOME"] = str(home)
    return env


def pids_under(temp_dir: str) -> list[int]:
    """The processes whose command line names ``temp_dir``: only the head this module started."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if temp_dir in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process ended meanwhile
    return [pid for pid in pids if pid != os.getpid()]


def stop_pids(pids: list[int], grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.2)


@pytest.fixture(scope="module")
def token_head():
    """A one-CPU Ray head that requires a token; yields its GCS address, Ray Client address
    (``ray://``, what the Kubernetes manifests use) and token."""
    root = tempfile.mkdtemp(prefix="sc-rayauth-", dir="/tmp")
    home = Path(root, "home")
    home.mkdir()
    token = secrets.token_hex(16)
    address = f"127.0.0.1:{free_port()}"
    client_port = free_port()
    env = {**clean_env(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head"]
    start += ["--node-ip-address", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    start += ["--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats"]
    start += ["--ray-client-server-port", str(client_port)]
    start += ["--temp-dir", str(Path(root, "ray"))]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, (started.stdout + started.stderr)[-3000:]
        yield address, f"ray://127.0.0.1:{client_port}", token
    finally:
        stop_pids(pids_under(root))
        shutil.rmtree(root, ignore_errors=True)


# Ray Client's proxier sometimes fails to start the per-client server process, tripping over
# a zombie process in psutil (seen on CI machines whose init does not reap orphans). That is
# Ray's server failing, not the connection being refused: such a client is run again.
PROXIER_FAILURE = "Initialization failure from server"


def run_client(address: str, home: Path, **extra_env: str) -> str:
    env = {**clean_env(home), "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings"}
    env.update(extra_env)
    for _ in range(3):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", CLIENT.format(address=address)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        print(f"client took {time.monotonic() - started:.1f}s")
        if PROXIER_FAILURE not in proc.stdout:
            break
    return proc.stdout


def test_client_without_token_gets_a_message_naming_ray_auth_token(token_head, tmp_path):
    address, _, _ = token_head
    out = run_client(address, tmp_path)
    assert "UNAVAILABLE:" in out
    assert "RAY_AUTH_TOKEN" in out
    assert "ray get-auth-token" in out


def test_token_without_auth_mode_is_refused_at_once(token_head, tmp_path):
    """Ray would not send it (the mode is off) and fail 20 s later with a bare ConnectionError."""
    address, _, token = token_head
    out = run_client(address, tmp_path, RAY_AUTH_TOKEN=token)
    assert "UNAVAILABLE:" in out
    assert "RAY_AUTH_MODE=token" in out


def test_auth_mode_without_token_names_ray_auth_token(token_head, tmp_path):
    address, _, _ = token_head
    out = run_client(address, tmp_path, RAY_AUTH_MODE="token")
    assert "UNAVAILABLE: Ray refused the connection" in out
    assert "RAY_AUTH_TOKEN" in out


def test_client_with_auth_mode_and_token_connects(token_head, tmp_path):
    """The manifests' way: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret."""
    address, _, token = token_head
    out = run_client(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    assert "CONNECTED: 42" in out


def test_client_with_token_file_path_connects(token_head, tmp_path):
    address, _, token = token_head
    token_file = tmp_path / "ray-token"
    token_file.write_text(token)
    out = run_client(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    assert "CONNECTED: 42" in out


def test_ray_client_with_auth_mode_and_token_connects(token_head, tmp_path):
    _, client_address, token = token_head
    out = run_client(client_address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    assert "CONNECTED: 42" in out


def test_ray_client_without_token_is_unavailable(token_head, tmp_path):
    _, client_address, _ = token_head
    out = run_client(client_address, tmp_path)
    assert "UNAVAILABLE:" in out
    assert "RAY_AUTH_TOKEN" in out
