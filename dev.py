#!/usr/bin/env python3
"""SeedCore's two commands, needing nothing but Python 3.11+.

    python dev.py          run SeedCore on its embedded defaults (SQLite, local Ray)
    python dev.py test     run the tests: on SQLite, then on PostgreSQL when it answers, then
                           the fault suite (tests/faults; SEEDCORE_FAULTS=0 leaves it out)
    python dev.py check    lint, Django checks and the migrations check

The first call makes .venv/ and installs the project with its dev extra into it; later calls
reinstall only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".seedcore-installed"
DEFAULT_TEST_POSTGRES = "postgres://postgres@127.0.0.1:5432/seedcore"


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


def postgres_answers(url: str) -> bool:
    code = "import psycopg,sys; psycopg.connect(sys.argv[1], dbname='postgres', connect_timeout=3)"
    return run(PYTHON, "-c", code, url.rsplit("/", 1)[0] + "/postgres") == 0


def postgres_server_binaries() -> Path | None:
    """The bin/ of an installed PostgreSQL server (the fault suite starts one of its own)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def test(extra: list[str]) -> int:
    """SQLite, then PostgreSQL, then the fault suite; with pytest arguments, only the first two.

    The PostgreSQL pass leaves out the tests that touch no database (``db_independent``, marked
    by tests/conftest.py): they ran in the SQLite pass already.
    """
    required = os.environ.get("SEEDCORE_REQUIRE_POSTGRES") == "1"
    code = run(PYTHON, "-m", "pytest", *extra, env={"DATABASE_URL": ""})
    if code:
        return code
    url = os.environ.get("SEEDCORE_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES)
    if not postgres_answers(url):
        if required:
            print(f"dev.py: PostgreSQL at {url} does not answer, and it is required", flush=True)
            return 1
        print(f"dev.py: PostgreSQL at {url} does not answer; ran on SQLite only", flush=True)
        return 0
    print(f"dev.py: running the tests again on PostgreSQL ({url})", flush=True)
    only_once = ["-m", "not db_independent"]
    code = run(PYTHON, "-m", "pytest", *only_once, *extra, env={"DATABASE_URL": url})
    if code or extra:
        return code
    return faults(url, required)


def faults(url: str, required: bool) -> int:
    """tests/faults: kills and restarts Ray, rundispatcher and a PostgreSQL of its own, so it
    runs in a pytest process of its own (see README.md, "Fault and multi-node tests")."""
    if os.environ.get("SEEDCORE_FAULTS") == "0":
        print("dev.py: SEEDCORE_FAULTS=0: fault suite not run", flush=True)
        return 0
    if postgres_server_binaries() is None:
        print("dev.py: no PostgreSQL server binaries under /usr/lib/postgresql", flush=True)
        return 1 if required else 0
    print("dev.py: running the fault suite (tests/faults)", flush=True)
    env = {"DATABASE_URL": url, "SEEDCORE_FAULTS": "1"}
    return run(PYTHON, "-m", "pytest", "tests/faults", "-s", env=env)


def check() -> int:
    for step in (
        [PYTHON, "-m", "ruff", "check", "."],
        [PYTHON, "-m", "ruff", "format", "--check", "."],
        [PYTHON, "manage.py", "check"],
        [PYTHON, "manage.py", "makemigrations", "--check", "--dry-run"],
    ):
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
        env = {"DEBUG": os.environ.get("DEBUG", "1")}
        return run(PYTHON, "manage.py", "up", *extra, env=env)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
