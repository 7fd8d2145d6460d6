"""A module no installed app discovers: a task row naming a function here must fail without
this module ever being imported, so importing it leaves a marker file behind."""

from __future__ import annotations

from tests.taskapp import NOT_A_TASK_MARKER

NOT_A_TASK_MARKER.write_text("imported")


def plain_function() -> str:
    return "should never run"
