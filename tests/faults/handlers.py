"""The ``record`` handler: each execution appends one line to a file, so the fault suite
checks "exactly once to completion" against what really ran rather than assuming it.

Found by ``autodiscover()`` because tests/faults/settings.py installs ``tests.faults``. Every
process of the simulated cluster shares this machine's filesystem, and one ``O_APPEND`` write
of a short line is atomic, so concurrent agents never interleave their lines.
"""

from __future__ import annotations

import os
import uuid

from organism.handlers import PermanentError, TaskCancelled, TaskContext, handler


@handler("record", max_attempts=50)
async def record(params: dict, ctx: TaskContext) -> dict:
    """Wait ``params.seconds`` (default 0), then append ``<task id> <attempt> <execution id>``
    to ``params.log`` and return the execution id. A cancel ends the wait unrecorded."""
    log = params.get("log")
    if not isinstance(log, str) or not os.path.isabs(log):
        raise PermanentError("params.log must be an absolute file path")
    seconds = float(params.get("seconds", 0))
    if seconds and await ctx.wait_cancelled(seconds):
        raise TaskCancelled("cancelled before recording")
    execution = uuid.uuid4().hex
    line = f"{ctx.task_id} {ctx.attempt} {execution}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return {"execution": execution, "attempt": ctx.attempt}


@handler("where")
async def where(params: dict, ctx: TaskContext) -> dict:
    """The Ray node the task ran on (tests/faults/test_organ_resources.py)."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id()}
