#!/usr/bin/env python3
"""SeedCore's two commands, needing nothing but Python 3.11+.

    python dev.py          run SeedCore on its embedded defaults (embedded PostgreSQL under var/,
                           a local Ray, an in-process channel layer)
    python dev.py test     run the tests once, on PostgreSQL: SEEDCORE_TEST_POSTGRES_URL's, else a
                           throwaway embedded server; then the fault suite (tests/faults;
                           SEEDCORE_FAULTS=0 leaves it out)
    python dev.py check    lint, Django checks and the migrations check

The first call makes .venv/ and installs the project with its dev extra into it; later calls
reinstall only when pyproject.toml changes. An embedded server that a command started is
stopped when the command ends; one that was running before is left running.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".seedcore-installed"


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv (first run only)", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing SeedCore and its dependencies into .venv", flush=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def run(*args: object, env: dict[str, str] | None = None) -> int:
    return subprocess.call([str(a) for a in args], cwd=ROOT, env={**os.environ, **(env or {})})


def embedded_postgres(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m seedcore_site.embedded_postgres ARGS`` (see that module)."""
    command = [str(PYTHON), "-m", "seedcore_site.embedded_postgres", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


@contextlib.contextmanager
def embedded_server_left_as_found() -> Iterator[None]:
    """With DATABASE_URL unset, stop the embedded server afterwards if it was not running
    before (the processes inside start it on their first connection)."""
    embedded = not os.environ.get("DATABASE_URL", "").strip()
    was_running = embedded and embedded_postgres("status").returncode == 0
    try:
        yield
    finally:
        if embedded and not was_running:
            embedded_postgres("stop")


@contextlib.contextmanager
def test_database() -> Iterator[str]:
    """SEEDCORE_TEST_POSTGRES_URL, else a throwaway embedded server (no fsync) in a temp dir."""
    url = os.environ.get("SEEDCORE_TEST_POSTGRES_URL", "").strip()
    if url:
        yield url
        return
    scratch = Path(tempfile.mkdtemp(prefix="seedcore-test-"))
    data_dir = str(scratch / "postgres")
    started = embedded_postgres("start", "--data-dir", data_dir, "--throwaway")
    if started.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise SystemExit(f"dev.py: could not start a PostgreSQL for the tests:\n{started.stderr}")
    print(f"dev.py: tests run on a throwaway embedded PostgreSQL in {scratch}", flush=True)
    try:
        yield started.stdout.strip()
    finally:
        embedded_postgres("stop", "--data-dir", data_dir)
        shutil.rmtree(scratch, ignore_errors=True)


def test(extra: list[str]) -> int:
    """The suite once, on PostgreSQL; then the fault suite unless pytest arguments were given."""
    with test_database() as url:
        code = run(PYTHON, "-m", "pytest", *extra, env={"DATABASE_URL": url})
        if code or extra:
            return code
        return faults(url)


def faults(url: str) -> int:
    """tests/faults: kills and restarts Ray, rundispatcher and an embedded PostgreSQL of its
    own, so it runs in a pytest process of its own (README.md, "Fault and multi-node tests")."""
    if os.environ.get("SEEDCORE_FAULTS") == "0":
        print("dev.py: SEEDCORE_FAULTS=0: fault suite not run", flush=True)
        return 0
    print("dev.py: running the fault suite (tests/faults)", flush=True)
    env = {"DATABASE_URL": url, "SEEDCORE_FAULTS": "1"}
    return run(PYTHON, "-m", "pytest", "tests/faults", "-s", env=env)


def serve(extra: list[str]) -> int:
    """``manage.py up``: Ctrl-C reaches it from the terminal, and SIGTERM (a process manager)
    is passed on to it; this process only waits for it to stop its dispatcher and exit, then
    stops the embedded server it started."""
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1")}
    with embedded_server_left_as_found():
        child = subprocess.Popen([str(PYTHON), "manage.py", "up", *extra], cwd=ROOT, env=env)
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: child.terminate()),
        }
        try:
            return child.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def check() -> int:
    steps = (
        [PYTHON, "-m", "ruff", "check", "."],
        [PYTHON, "-m", "ruff", "format", "--check", "."],
        [PYTHON, "manage.py", "check"],
        [PYTHON, "manage.py", "makemigrations", "--check", "--dry-run"],
    )
    with embedded_server_left_as_found():
        for step in steps:
            code = run(*step, env={"DEBUG": "1"})
            if code:
                return code
    return 0


def main(argv: list[str]) -> int:
    ensure_venv()
    command, extra = (argv[0], argv[1:]) if argv else ("run", [])
    if command == "test":
        return test(extra)
    if command == "check":
        return check()
    if command == "run":
        return serve(extra)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
