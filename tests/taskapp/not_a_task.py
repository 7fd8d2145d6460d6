"""A module no installed app discovers: a task row naming a function here must fail without
this module ever being imported, so importing it leaves a marker file behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

MARKER = Path(tempfile.gettempdir()) / "seedcore-test-not-a-task-imported"
MARKER.write_text("imported")


def plain_function() -> str:
    return "should never run"
