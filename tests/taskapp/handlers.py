"""SeedCore handlers the Ray and browser tests run on real agents (found by autodiscover, as
the actors find every installed app's ``handlers``)."""

from __future__ import annotations

import logging
import sys

from organism.handlers import TaskContext, handler

logger = logging.getLogger("tests.taskapp.chatty")


@handler("chatty")
def chatty(params: dict, ctx: TaskContext) -> dict:
    """Log and print what ``params.say`` says (a sync handler: it runs in the agent's thread
    pool), so a test can find it in the attempt's run."""
    say = str(params.get("say", "hello"))
    logger.info("logged: %s (attempt %d)", say, ctx.attempt)
    print(f"printed: {say}")
    print(f"to stderr: {say}", file=sys.stderr)
    return {"said": say}
