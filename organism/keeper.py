"""Keeping ``rundispatcher`` running beside the web server under ``python dev.py``.

A dispatcher that dies (killed, out of memory, its local Ray gone) is started again after a
backoff that doubles while it keeps dying and resets once it has run for a while, and each
restart is said on stderr. An exit the user asked for (Ctrl-C, SIGTERM, a clean exit) is not
restarted, and neither is anything after :meth:`ChildKeeper.stop`.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

# Exit codes of a stop the user asked for: a clean exit, SIGINT/SIGTERM, or a shell's 128+N.
REQUESTED_EXITS = frozenset(
    {0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM}
)


def restart_delay(failures: int, *, first: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before restart number ``failures`` (1, 2, …): 1, 2, 4, … up to ``cap``."""
    return min(cap, first * 2 ** max(0, failures - 1))


class ChildKeeper:
    """Runs ``command`` and restarts it when it dies unasked, until :meth:`stop`."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        say: Callable[[str], None],
        name: str = "the dispatcher",
        healthy_after: float = 60.0,
        first_delay: float = 1.0,
        stop_timeout: float = 30.0,
    ):
        self.command = list(command)
        self.say = say
        self.name = name
        self.healthy_after = healthy_after
        self.first_delay = first_delay
        self.stop_timeout = stop_timeout
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @property
    def process(self) -> subprocess.Popen | None:
        return self._process

    def start(self) -> subprocess.Popen:
        process = self._spawn()
        assert process is not None
        self._thread = threading.Thread(target=self._watch, daemon=True, name="child-keeper")
        self._thread.start()
        return process

    def stop(self) -> None:
        """Ask the child to stop gracefully (SIGTERM), wait, and restart it no more."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _spawn(self) -> subprocess.Popen | None:
        """A new child, unless :meth:`stop` came first (checked under the lock it takes)."""
        with self._lock:
            if self._stopping.is_set():
                return None
            self._process = subprocess.Popen(self.command)
            return self._process

    def _watch(self) -> None:
        failures = 0
        while True:
            process = self._process
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set() or code in REQUESTED_EXITS:
                return
            failures = 1 if time.monotonic() - started >= self.healthy_after else failures + 1
            delay = restart_delay(failures, first=self.first_delay)
            self.say(
                f"{self.name} exited with code {code}; restarting it in {delay:g} s "
                "(tasks stay queued meanwhile)"
            )
            if self._stopping.wait(delay):
                return
            process = self._spawn()
            if process is None:
                return
            self.restarts += 1
            self.say(f"restarted {self.name} (pid {process.pid})")
