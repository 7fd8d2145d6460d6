"""ChildKeeper: what ``python dev.py`` uses to keep ``rundispatcher`` running."""

import sys
import time

import pytest

from organism.keeper import ChildKeeper, restart_delay


def test_restart_delay_doubles_up_to_its_cap():
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert restart_delay(20) == 30


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_child_that_dies_is_restarted_saying_so(tmp_path):
    runs = tmp_path / "runs"
    # Each run appends a line, then dies as if killed (exit 1) the first two times.
    script = (
        "import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); "
        "p.open('a').write('run\\n'); n = len(p.read_text().splitlines()); "
        "sys.exit(1) if n < 3 else time.sleep(60)"
    )
    said = []
    keeper = ChildKeeper(
        [sys.executable, "-c", script, str(runs)], say=said.append, first_delay=0.05
    )
    keeper.start()
    try:
        wait_for(lambda: runs.exists() and len(runs.read_text().splitlines()) == 3)
        wait_for(lambda: keeper.restarts == 2)
        assert keeper.process.poll() is None  # the third run lives
        assert any("exited with code 1; restarting it in 0.05 s" in line for line in said)
        assert any("exited with code 1; restarting it in 0.1 s" in line for line in said)
    finally:
        keeper.stop()
    assert keeper.process.poll() is not None


@pytest.mark.parametrize("code", [0, 130])
def test_an_exit_the_user_asked_for_is_not_restarted(code):
    said = []
    keeper = ChildKeeper(
        [sys.executable, "-c", f"raise SystemExit({code})"], say=said.append, first_delay=0.01
    )
    process = keeper.start()
    process.wait()
    time.sleep(0.2)
    assert keeper.restarts == 0 and said == []


def test_nothing_is_restarted_after_stop():
    said = []
    keeper = ChildKeeper(
        [sys.executable, "-c", "import time; time.sleep(60)"], say=said.append, first_delay=0.01
    )
    first = keeper.start()
    keeper.stop()
    time.sleep(0.2)
    assert first.poll() is not None
    assert keeper.process is first and keeper.restarts == 0
