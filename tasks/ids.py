"""Task IDs as people type them: a full UUID or a hex prefix of at least 4 characters."""

from __future__ import annotations

import string
import uuid
from dataclasses import dataclass

MIN_PREFIX = 4
MAX_CANDIDATES = 5
_HEX = set(string.hexdigits.lower())


class TaskIdError(Exception):
    """Base of the errors resolving a task ID; the message is for people."""


class InvalidTaskId(TaskIdError):
    pass


class TaskNotFound(TaskIdError):
    pass


class AmbiguousTaskId(TaskIdError):
    def __init__(self, text: str, candidates: list[str]):
        self.candidates = candidates
        shown = ", ".join(candidates)
        super().__init__(f"task ID prefix {text!r} matches several tasks: {shown}")


@dataclass(frozen=True)
class IdRange:
    """The inclusive UUID range a prefix covers; ``exact`` when it is a whole UUID."""

    low: uuid.UUID
    high: uuid.UUID

    @property
    def exact(self) -> bool:
        return self.low == self.high


def parse_id_prefix(text: str) -> IdRange:
    """Parse a full UUID or a hex prefix (dashes ignored, any case) into the range it covers."""
    raw = (text or "").strip()
    digits = raw.replace("-", "").lower()
    if not digits or not set(digits) <= _HEX:
        raise InvalidTaskId(f"{raw!r} is not a task ID: use a UUID or at least 4 hex digits")
    if len(digits) > 32:
        raise InvalidTaskId(f"{raw!r} is not a task ID: a UUID has 32 hex digits")
    if len(digits) < MIN_PREFIX:
        raise InvalidTaskId(f"{raw!r} is too short: give at least {MIN_PREFIX} hex digits")
    return IdRange(
        low=uuid.UUID(hex=digits.ljust(32, "0")), high=uuid.UUID(hex=digits.ljust(32, "f"))
    )
