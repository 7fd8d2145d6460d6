"""The handler registry, the task context and the built-in handlers, without Ray."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest
from django.test import override_settings

from organism import handlers
from organism.handlers import (
    CONTROL_TYPES,
    PermanentError,
    TaskCancelled,
    TaskContext,
    get_handler,
    handler,
    missing_handler_message,
)


def test_decorator_registers_sync_and_async_handlers_with_options(registry):
    @handler("unit_sync", max_attempts=2, timeout=1.5)
    def sync_fn(params, ctx):
        return params

    @handler("unit_async")
    async def async_fn(params, ctx):
        return params

    spec = get_handler("unit_sync")
    assert (spec.type, spec.func, spec.max_attempts, spec.timeout) == ("unit_sync", sync_fn, 2, 1.5)
    assert spec.is_async is False and spec.control is False
    assert get_handler("unit_async").is_async is True
    assert get_handler("unit_async").max_attempts is None
    assert get_handler("never_registered") is None


def test_a_type_cannot_get_two_different_handlers(registry):
    @handler("unit_dup")
    def first(params, ctx):
        return 1

    with pytest.raises(ValueError, match="already has a handler"):

        @handler("unit_dup")
        def second(params, ctx):
            return 2

    assert get_handler("unit_dup").func is first


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({}, "non-empty"),
    ],
)
def test_bad_handler_options_are_refused(kwargs, message):
    type_name = "" if not kwargs else "unit_bad"
    with pytest.raises(ValueError, match=message):
        handler(type_name, **kwargs)


def test_missing_handler_message_is_exact():
    assert missing_handler_message("x") == "no handler registered for type 'x'"


def test_builtins_are_registered():
    for type_name in ("echo", "test", "sleep", "fail"):
        assert get_handler(type_name) is not None and not get_handler(type_name).control
    assert set(CONTROL_TYPES) == {
        "get_organism_status",
        "execute_on_organ",
        "execute_on_random_organ",
        "get_organism_summary",
        "initialize_organism",
        "shutdown_organism",
        "get_metrics",
    }
    assert all(get_handler(t).control for t in CONTROL_TYPES)


def test_autodiscover_imports_each_installed_apps_handlers_module(registry, tmp_path, monkeypatch):
    app = tmp_path / "unit_discovered_app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "handlers.py").write_text(
        "from organism.handlers import handler\n\n"
        "@handler('unit_discovered')\n"
        "def discovered(params, ctx):\n"
        "    return 'found'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with override_settings(INSTALLED_APPS=["organism", "unit_discovered_app"]):
        assert get_handler("unit_discovered") is None
        handlers.autodiscover()
        assert get_handler("unit_discovered").func({}, TaskContext("t")) == "found"
    sys.modules.pop("unit_discovered_app.handlers", None)
    sys.modules.pop("unit_discovered_app", None)


def test_autodiscover_reports_a_broken_handlers_module(registry, tmp_path, monkeypatch):
    app = tmp_path / "unit_broken_app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "handlers.py").write_text("import a_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with (
        override_settings(INSTALLED_APPS=["unit_broken_app"]),
        pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"),
    ):
        handlers.autodiscover()
    sys.modules.pop("unit_broken_app", None)


def test_context_cancel_wakes_an_async_waiter_from_another_thread():
    ctx = TaskContext("t1", attempt=2)

    async def scenario():
        assert await ctx.wait_cancelled(0.01) is False
        threading.Timer(0.05, ctx.cancel).start()
        started = time.monotonic()
        assert await ctx.wait_cancelled(5) is True
        return time.monotonic() - started

    assert ctx.is_cancelled() is False
    assert asyncio.run(scenario()) < 1
    assert ctx.is_cancelled() is True and ctx.attempt == 2


def run_builtin(type_name: str, params: dict, ctx: TaskContext | None = None):
    return asyncio.run(get_handler(type_name).func(params, ctx or TaskContext("t")))


def test_echo_test_and_fail_builtins():
    assert run_builtin("echo", {"a": [1, 2]}) == {"a": [1, 2]}
    report = run_builtin("test", {"x": 1}, TaskContext("abc", attempt=3))
    assert report["status"] == "ok" and report["task_id"] == "abc" and report["attempt"] == 3
    with pytest.raises(RuntimeError, match="boom"):
        run_builtin("fail", {"message": "boom"})
    with pytest.raises(PermanentError):
        run_builtin("fail", {"permanent": True})


def test_sleep_builtin_sleeps_and_stops_when_cancelled():
    assert run_builtin("sleep", {"seconds": 0.01}) == {"slept": 0.01}
    with pytest.raises(PermanentError, match="params.seconds"):
        run_builtin("sleep", {"seconds": "soon"})
    ctx = TaskContext("t")
    threading.Timer(0.05, ctx.cancel).start()
    started = time.monotonic()
    with pytest.raises(TaskCancelled):
        run_builtin("sleep", {"seconds": 30}, ctx)
    assert time.monotonic() - started < 2
