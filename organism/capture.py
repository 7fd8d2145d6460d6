"""What a handler logs, captured per attempt: its ``logging`` records and what it prints.

An agent runs many attempts at once (async handlers as asyncio tasks, sync ones in a thread
pool), so the capture follows the attempt, not the process: a :class:`LogBuffer` is made the
*current* one of the attempt's context (a contextvar) and

- a logging handler on the root logger writes each record to the current buffer;
- proxies over ``sys.stdout`` and ``sys.stderr`` write to the current buffer, and pass
  everything else through to the stream they replaced.

An asyncio task copies its context when it is made, so the handler's task (and any task it
makes) sees its attempt's buffer; a thread does not, so sync handlers are called through
``contextvars.copy_context().run`` (see ``organism.agent``). :func:`install` puts the hooks in
place once per agent process (``organism.ray.actors.AgentActor``); until then, and outside an
attempt, nothing is captured. A handler that logs nothing costs a small object and a context
switch of one variable; its outcome carries no log.

Plain Python: no Ray, no Django.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from typing import Any, TextIO

# What one attempt keeps of its log: 64 Ki characters, then the cut is said.
LOG_MAX_CHARS = 64 * 1024
# Records below this level are not captured unless their own logger lets them through.
CAPTURE_LEVEL = logging.INFO
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# PostgreSQL's jsonb refuses \u0000 and unpaired surrogates (organism.messages.json_problem);
# one such character in a log must not fail the batch of outcomes written with it.
_JSONB_REFUSES = re.compile("[\x00\ud800-\udfff]")

current: contextvars.ContextVar[LogBuffer | None] = contextvars.ContextVar(
    "seedcore_log_buffer", default=None
)


class LogBuffer:
    """One attempt's log: text appended up to :data:`LOG_MAX_CHARS`, the rest counted."""

    __slots__ = ("_cut", "_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._cut = 0

    def write(self, text: str) -> None:
        if not text:
            return
        room = LOG_MAX_CHARS - self._size
        if len(text) <= room:
            self._parts.append(text)
            self._size += len(text)
            return
        if room > 0:
            self._parts.append(text[:room])
            self._size = LOG_MAX_CHARS
        self._cut += len(text) - max(room, 0)

    def text(self) -> str | None:
        """The log, with the cut said (``… [cut: N more characters]``); None if empty."""
        if not self._parts:
            return None
        text = _JSONB_REFUSES.sub("\ufffd", "".join(self._parts))
        if self._cut:
            text += f"… [cut: {self._cut:,} more characters]"
        return text


class CaptureHandler(logging.Handler):
    """Writes a record to the current attempt's buffer. Outside an attempt it stands in for
    logging's last resort (records at WARNING and above to stderr) when the root logger had
    no handler of its own, so adding it silences nothing that was shown before."""

    def __init__(self, *, last_resort: bool) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.last_resort = last_resort

    def emit(self, record: logging.LogRecord) -> None:
        buffer = current.get()
        if buffer is None:
            if self.last_resort and record.levelno >= logging.WARNING:
                fallback = logging.lastResort
                if fallback is not None:
                    fallback.handle(record)
            return
        try:
            buffer.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class StreamProxy:
    """Stands for ``sys.stdout`` or ``sys.stderr``: writes go to the current attempt's
    buffer, or through to the stream it replaced."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        buffer = current.get()
        if buffer is None:
            return self.stream.write(text)
        buffer.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current.get() is None:
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_installed: CaptureHandler | None = None
_saved_levels: list[tuple[logging.Logger | logging.Handler, int]] = []


def install() -> None:
    """Route logging records and stdout/stderr writes made during an attempt to its buffer;
    once per process (later calls do nothing).

    Records at INFO and above reach the capture, so the root logger's level is lowered to
    INFO if it was higher; each handler it already had is raised to that old level, so what
    it shows does not change.
    """
    global _installed
    if _installed is not None:
        return
    root = logging.getLogger()
    threshold = root.level
    if threshold > CAPTURE_LEVEL:
        _saved_levels[:] = [(root, threshold), *((h, h.level) for h in root.handlers)]
        for existing in root.handlers:
            existing.setLevel(max(existing.level, threshold))
        root.setLevel(CAPTURE_LEVEL)
    _installed = CaptureHandler(last_resort=not root.handlers)
    root.addHandler(_installed)
    if not isinstance(sys.stdout, StreamProxy):
        sys.stdout = StreamProxy(sys.stdout)
    if not isinstance(sys.stderr, StreamProxy):
        sys.stderr = StreamProxy(sys.stderr)


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    global _installed
    if _installed is not None:
        logging.getLogger().removeHandler(_installed)
        _installed = None
    for target, level in _saved_levels:
        target.setLevel(level)
    _saved_levels.clear()
    if isinstance(sys.stdout, StreamProxy):
        sys.stdout = sys.stdout.stream
    if isinstance(sys.stderr, StreamProxy):
        sys.stderr = sys.stderr.stream
