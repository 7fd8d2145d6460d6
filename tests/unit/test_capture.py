"""What a handler logs, captured per attempt (organism.capture) as an agent runs many at once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import time
import uuid

from organism import capture
from organism.agent import Agent
from organism.capture import LOG_MAX_CHARS, LogBuffer, StreamProxy
from organism.handlers import handler
from organism.messages import OutcomeStatus, TaskPayload


@contextlib.contextmanager
def captured():
    """The hooks an agent process installs, removed again after. Used inside the test, not
    as a fixture: pytest puts its own sys.stdout back between a test's phases."""
    capture.install()
    try:
        yield
    finally:
        capture.uninstall()


def payload(type: str, params: dict | None = None) -> TaskPayload:
    return TaskPayload(str(uuid.uuid4()), type, 1, params or {})


def test_a_log_is_cut_at_its_cap_and_says_how_much_was_cut():
    buffer = LogBuffer()
    buffer.write("a" * (LOG_MAX_CHARS - 5))
    buffer.write("b" * 12)  # 5 fit
    buffer.write("c" * 1000)
    text = buffer.text()
    assert text == "a" * (LOG_MAX_CHARS - 5) + "b" * 5 + "… [cut: 1,007 more characters]"
    assert LogBuffer().text() is None  # nothing written: no log at all


def test_what_jsonb_cannot_store_is_replaced_not_refused():
    buffer = LogBuffer()
    buffer.write("nul\x00 and \ud800 surrogate")
    assert buffer.text() == "nul\ufffd and \ufffd surrogate"


def test_outside_an_attempt_writes_pass_through():
    stream = io.StringIO()
    proxy = StreamProxy(stream)
    proxy.write("plain\n")
    buffer = LogBuffer()
    token = capture.current.set(buffer)
    try:
        proxy.write("captured\n")
    finally:
        capture.current.reset(token)
    assert stream.getvalue() == "plain\n"
    assert buffer.text() == "captured\n"
    assert proxy.getvalue() == "plain\n"  # anything else is the stream's


def test_concurrent_attempts_each_get_their_own_log(registry):
    logger = logging.getLogger("unit.capture")

    @handler("unit_log_async")
    async def log_async(params, ctx):
        for step in range(3):
            logger.info("async %s step %d", params["name"], step)
            print(f"printed by {params['name']} {step}")
            await asyncio.sleep(0.01)
        return params["name"]

    @handler("unit_log_sync")
    def log_sync(params, ctx):
        for step in range(3):
            logger.warning("sync %s step %d", params["name"], step)
            print(f"printed by {params['name']} {step}", file=sys.stderr)
            time.sleep(0.01)
        return params["name"]

    @handler("unit_log_nothing")
    async def log_nothing(params, ctx):
        return params["name"]

    agent = Agent("a_agent_0", "a")
    tasks = [
        payload("unit_log_async", {"name": "A1"}),
        payload("unit_log_async", {"name": "A2"}),
        payload("unit_log_sync", {"name": "S1"}),
        payload("unit_log_sync", {"name": "S2"}),
        payload("unit_log_nothing", {"name": "N"}),
    ]

    async def scenario():
        return [o async for chunk in agent.run_batch(tasks) for o in chunk]

    with captured():
        outcomes = {o.output: o for o in asyncio.run(scenario())}
    assert all(o.status is OutcomeStatus.OK for o in outcomes.values())
    for name in ("A1", "A2", "S1", "S2"):
        log = outcomes[name].run.log
        line = "INFO unit.capture: async" if name[0] == "A" else "WARNING unit.capture: sync"
        for step in range(3):
            assert f"{line} {name} step {step}\n" in log
            assert f"printed by {name} {step}\n" in log
        others = {"A1", "A2", "S1", "S2"} - {name}
        assert not any(f"by {other} " in log for other in others), log
    assert outcomes["N"].run.log is None


def test_a_handler_that_raises_keeps_what_it_logged(registry):
    @handler("unit_log_then_fail")
    def log_then_fail(params, ctx):
        print("about to fail")
        raise RuntimeError("boom")

    with captured():
        outcome = asyncio.run(Agent("a_agent_0", "a").run(payload("unit_log_then_fail")))
    assert outcome.status is OutcomeStatus.ERROR
    assert outcome.run.log == "about to fail\n"
    assert outcome.run_record()[-2] == "error"


def test_install_keeps_what_was_shown_outside_attempts():
    root = logging.getLogger()
    with captured():
        # INFO records now reach the capture; the root's own handlers keep their threshold.
        assert root.level <= logging.INFO
        others = [h for h in root.handlers if h is not capture._installed]
        assert all(h.level >= logging.WARNING for h in others)
        proxy = sys.stdout
        assert isinstance(proxy, StreamProxy)
        stream = io.StringIO()
        proxy.stream, saved = stream, proxy.stream
        try:
            print("outside any attempt")
        finally:
            proxy.stream = saved
    assert stream.getvalue() == "outside any attempt\n"
    assert not isinstance(sys.stdout, StreamProxy)  # uninstalled
