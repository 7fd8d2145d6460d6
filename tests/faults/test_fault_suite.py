"""The bounded fault and load suite: the real ``rundispatcher`` with 4 dispatchers, on a Ray
head and a PostgreSQL of the suite's own, while

1. a dispatcher actor is killed (``ray.kill``),
2. the ``rundispatcher`` process is killed with SIGKILL and started again,
3. the Coordinator is killed,
4. PostgreSQL is restarted;

afterwards no task is lost, none completed twice (checked against the ``record`` handler's
log), none left RUNNING, and every cancelled task is still CANCELLED.

``SEEDCORE_FAULT_TASKS`` sets the load (default 50,000, sized to finish well within CI's ten
minutes on two cores). Figures are printed for the release note.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults.conftest import (
    PrivatePostgres,
    actor_env,
    start_ray_head,
    var_dir,
)
from tests.faults.recording import audit

TASKS = int(os.environ.get("SEEDCORE_FAULT_TASKS", "50000"))
TASK_SECONDS = 0.5  # long enough that every fault catches tasks in flight
CANCELLED = 100
DISPATCHERS = 4
ALIAS = "faults"
FINISH_TIMEOUT = 420.0
CHUNKS = 50


class RunDispatcher:
    """``manage.py rundispatcher`` as a subprocess, its output appended to one log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "a") as out:
            out.write(f"--- start {self.starts}\n")
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "rundispatcher", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_supervising(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        marker = "supervising"
        while self.log.read_text().split(f"--- start {self.starts}\n")[-1].count(marker) == 0:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.5)

    def sigkill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the graceful stop
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@pytest.fixture
def faults_db(private_postgres: PrivatePostgres, django_db_blocker) -> Iterator[str]:
    """A migrated ``seedcore`` database on the private server, reachable from this process
    as the ``faults`` connection alias; yields its URL."""
    import dj_database_url
    from django.db import connections

    url = private_postgres.url("seedcore")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.faults.settings"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert migrate.returncode == 0, migrate.stderr
    configured = connections.configure_settings(
        {"default": dict(connections.settings["default"]), ALIAS: dj_database_url.parse(url)}
    )
    connections.settings[ALIAS] = configured[ALIAS]
    with django_db_blocker.unblock():
        try:
            yield url
        finally:
            connections[ALIAS].close()
            del connections[ALIAS]
            del connections.settings[ALIAS]


def retrying(step: Callable[[], object], timeout: float = 90) -> object:
    """Run a database step, reconnecting while the server restarts."""
    import psycopg
    from django.db import InterfaceError, OperationalError, connections

    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        # tasks.queue runs SQL on the raw psycopg cursor, so psycopg's own errors arrive too.
        except (OperationalError, InterfaceError, psycopg.OperationalError):
            connections[ALIAS].close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def counts() -> dict[str, int]:
    from tasks import selectors

    counts = retrying(lambda: selectors.count_by_status(using=ALIAS))
    return {s: c.count for s, c in counts.items()}


def wait_for_running(timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while counts()["RUNNING"] == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def kill_actor(name: str, address: str, namespace: str, env: dict[str, str]) -> None:
    """``ray.kill`` an actor from a short-lived driver of its own: this process's Ray client
    settles its auth mode at import, before the test gives the head its token."""
    script = (
        "import sys, ray; ray.init(address=sys.argv[1], namespace=sys.argv[2], "
        "log_to_driver=False); ray.kill(ray.get_actor(sys.argv[3], namespace=sys.argv[2]))"
    )
    subprocess.run(
        [sys.executable, "-c", script, address, namespace, name],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_no_task_lost_or_completed_twice_through_faults(faults_db, private_postgres, monkeypatch):
    from django.utils import timezone

    from tasks import queue, selectors

    scratch = var_dir()
    namespace = f"seedcore-faults-{uuid.uuid4().hex[:6]}"
    # Ray 2.60 turns token auth on in `ray start` whenever ~/.ray/auth_token exists; give the
    # head a token of its own and every client the same, the documented way to connect.
    env = {**actor_env(faults_db, namespace), "RAY_AUTH_MODE": "token"}
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    head = start_ray_head(scratch / "ray", env)
    log = scratch / "executions.log"
    dispatcher = RunDispatcher(
        ["--dispatchers", str(DISPATCHERS), "--address", head.address, "--namespace", namespace],
        {**os.environ, **env},
        scratch / "rundispatcher.log",
    )
    figures: dict[str, object] = {"tasks": TASKS, "dispatchers": DISPATCHERS}
    try:
        later = timezone.now() + timedelta(hours=1)
        parked = queue.enqueue_many(
            [{"type": "record", "params": {"log": str(log)}, "run_after": later}] * CANCELLED,
            using=ALIAS,
        )
        for task_id in parked:
            queue.cancel(task_id, using=ALIAS)
        started = time.monotonic()
        dispatcher.start()
        dispatcher.wait_supervising()

        def progress() -> str:
            now = counts()
            return f"{now['COMPLETED']} completed, {now['RUNNING']} running"

        def kill_a_dispatcher() -> None:
            kill_actor("seedcore_dispatcher_1", head.address, namespace, env)

        def sigkill_and_restart_rundispatcher() -> None:
            dispatcher.sigkill()
            time.sleep(2)  # the detached actors run on, unsupervised
            dispatcher.start()
            dispatcher.wait_supervising()

        def kill_the_coordinator() -> None:
            kill_actor("seedcore_coordinator", head.address, namespace, env)

        # The load arrives in CHUNKS while the faults strike between chunks, so each fault
        # meets tasks queued and in flight however fast this machine runs them.
        faults = {
            CHUNKS * 1 // 10: ("killed dispatcher", kill_a_dispatcher),
            CHUNKS * 3 // 10: ("SIGKILLed rundispatcher", sigkill_and_restart_rundispatcher),
            CHUNKS * 5 // 10: ("killed Coordinator", kill_the_coordinator),
            CHUNKS * 7 // 10: ("restarted PostgreSQL", private_postgres.restart),
        }
        ids: list[str] = []
        spec = {"type": "record", "params": {"log": str(log), "seconds": TASK_SECONDS}}
        for chunk in range(CHUNKS):
            size = TASKS // CHUNKS + (chunk < TASKS % CHUNKS)
            ids += retrying(lambda n=size: queue.enqueue_many([spec] * n, using=ALIAS))
            if chunk in faults:
                name, strike = faults[chunk]
                # After a fault the dispatchers may still be recovering (circuit open, the
                # Coordinator being recreated) with nothing in flight: strike only once some
                # task runs, so every fault meets work in flight.
                running = wait_for_running()
                figures[f"{name} at"] = progress()
                assert running, f"no task running before the {name}: {counts()}"
                strike()
        figures["enqueued all after s"] = round(time.monotonic() - started, 1)

        deadline = time.monotonic() + FINISH_TIMEOUT
        while (now := counts())["COMPLETED"] < TASKS or now["RUNNING"] or now["RETRY"]:
            assert time.monotonic() < deadline, now
            time.sleep(0.5)
        figures["duration s"] = round(time.monotonic() - started, 1)

        tasks = [retrying(lambda t=task_id: selectors.get_task(t, using=ALIAS)) for task_id in ids]
        result = audit(tasks, log)
        still_cancelled = sum(
            selectors.get_task(task_id, using=ALIAS)["status"] == "CANCELLED" for task_id in parked
        )
        rundispatcher_log = dispatcher.log.read_text()
        figures.update(
            {
                "executions": result.executions,
                "re-executed (rescued)": result.re_executed,
                "reaped by the supervisor": sum(
                    int(n) for n in re.findall(r"\| reaped (\d+)", rundispatcher_log)
                ),
                "dispatcher restarts": rundispatcher_log.count("restarting it"),
                "Coordinator recreations": rundispatcher_log.count("recreating it"),
                "lost": len(result.lost),
                "completed twice": len(result.completed_twice),
                "final counts": counts(),
                "cancelled still CANCELLED": f"{still_cancelled}/{CANCELLED}",
            }
        )
        print("\nfault suite figures:\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()))
        assert len(ids) == TASKS
        assert result.lost == [], result.lost[:10]
        assert result.completed_twice == [], result.completed_twice[:10]
        assert result.by_status == {"COMPLETED": TASKS}
        assert counts()["RUNNING"] == 0
        assert still_cancelled == CANCELLED
        assert "Traceback" not in rundispatcher_log, rundispatcher_log[-3000:]
    finally:
        dispatcher.stop()
        head.stop()
