"""A live SeedCore for the browser tests: daphne serving the ASGI app against the test
database, and Debian's Chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-test-pw"

T = TypeVar("T")


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ORM or queue code in a worker thread: Playwright's sync API keeps an event loop
    running in the test's thread, where Django rightly refuses sync database calls."""
    from django.db import connections

    def call() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def server_env(test_database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": test_database_url,
        "PYTHONPATH": str(ROOT),
        # The web never connects to Ray; the address only matters to a rundispatcher a test
        # starts with this environment (nothing answers there unless the test says so). With
        # no supervisor publishing in this namespace, the badge says "unhealthy".
        "RAY_ADDRESS": "127.0.0.1:9",
        "RAY_NAMESPACE": "seedcore-browser-test",
    }
    env.update(extra)
    return env


def start_daphne(
    env: dict[str, str], log: Path, options: Sequence[str] = ()
) -> tuple[subprocess.Popen, str]:
    """daphne on a free port; ``options`` are more of its command-line options."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            *options,
            "seedcore_site.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
    except RuntimeError:
        process.kill()
        raise
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def live_url(transactional_db, test_database_url) -> Iterator[str]:
    ARTIFACTS.mkdir(exist_ok=True)
    process, url = start_daphne(server_env(test_database_url), ARTIFACTS / "daphne.log")
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture
def staff_user(transactional_db, django_user_model):
    # A superuser, so the same login also shows the Task admin.
    return django_user_model.objects.create_user(
        "operator", password=PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture
def browser(staff_user):
    """Chromium, started after the database and the user are ready and closed before they are
    torn down (Playwright's loop must not be running while Django cleans up). Tests ask for
    their server fixture before ``page``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def log_in(page, base_url: str, username: str = "operator") -> None:
    page.goto(f"{base_url}/dashboard/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main [type=submit]")
    page.wait_for_url(f"{base_url}/dashboard/")
