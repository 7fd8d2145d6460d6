"""``benchdispatch --profile``: where each process spends its CPU during a drain.

- **Python processes** (dispatcher, Coordinator and agent actors): py-spy samples each one
  (``py-spy record --format raw``, stacks as collapsed text) for the length of the drain; the
  files are kept and the frames that used the most CPU, by the function's own time, are
  summed per process group.
- **PostgreSQL**: ``pg_stat_statements``, reset before the drain and read after it: each
  statement's calls, rows and execution time per task. It needs the server started with
  ``shared_preload_libraries = 'pg_stat_statements'``; without it the report says so.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.db import connection

PYSPY_RATE = 50  # samples per second per process: enough, and little in the way
STATEMENT_CHARS = 110


@dataclass(frozen=True)
class Frames:
    group: str
    samples: int
    top: list[tuple[str, float]]  # frame, share of the group's samples


class PySpy:
    """py-spy recording each of ``pids`` (pid → group) until :meth:`stop`."""

    def __init__(self, pids: dict[int, str], directory: Path):
        # In a virtualenv that is not activated, py-spy sits beside this Python.
        beside = Path(sys.executable).with_name("py-spy")
        executable = str(beside) if beside.exists() else shutil.which("py-spy")
        if executable is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.files: dict[Path, str] = {}
        self._processes = []
        for pid, group in sorted(pids.items()):
            path = directory / f"{group.replace(' ', '_')}-{pid}.txt"
            self.files[path] = group
            command = [executable, "record", "--pid", str(pid), "--format", "raw"]
            command += ["--rate", str(PYSPY_RATE), "--nonblocking", "-o", str(path)]
            self._processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def stop(self) -> None:
        # py-spy writes its file when interrupted.
        for process in self._processes:
            process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def frames(self, top: int = 8) -> list[Frames]:
        """The frames with the most own samples, per group, over the group's files."""
        own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for path, group in self.files.items():
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    own[group][stack.rsplit(";", 1)[-1]] += int(count)
        out = []
        for group, counter in own.items():
            total = sum(counter.values())
            shares = [(frame, count / total) for frame, count in counter.most_common(top)]
            out.append(Frames(group, total, shares))
        return out


def statements_available() -> bool:
    """Whether pg_stat_statements can be read here (made the extension if it can)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute("SELECT pg_stat_statements_reset()")
    except Exception:
        return False
    return True


def reset_statements() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_statements_reset()")


@dataclass(frozen=True)
class Statement:
    text: str
    calls: int
    rows: int
    exec_ms: float


def top_statements(limit: int = 10) -> list[Statement]:
    """This database's statements by execution time since the last reset."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, rows, total_exec_time "
            "FROM pg_stat_statements JOIN pg_database AS d ON d.oid = dbid "
            "WHERE d.datname = current_database() AND query NOT LIKE '%%pg_stat_statements%%' "
            "ORDER BY total_exec_time DESC LIMIT %s",
            [limit],
        )
        return [Statement(text[:STATEMENT_CHARS], *rest) for text, *rest in cursor.fetchall()]
