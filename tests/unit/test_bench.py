"""The arithmetic of organism.bench: percentiles and CPU split by process group."""

from __future__ import annotations

import pytest

from organism import bench


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert bench.percentile(values, 0.5) == 50
    assert bench.percentile(values, 0.95) == 95
    assert bench.percentile(values, 0.99) == 99
    assert bench.percentile([7.0], 0.99) == 7.0
    assert bench.percentile([3.0, 1.0, 2.0], 1.0) == 3.0


def test_cpu_spent_sums_each_group_and_counts_new_processes_from_zero():
    before = {1: ("agents", 1.0), 2: ("agents", 2.0), 3: ("PostgreSQL", 5.0)}
    after = {1: ("agents", 1.5), 2: ("agents", 2.25), 3: ("PostgreSQL", 6.0), 4: ("agents", 0.5)}
    spent = bench.cpu_spent(before, after)
    assert spent["agents"] == pytest.approx(1.25)
    assert spent["PostgreSQL"] == pytest.approx(1.0)
    assert spent["Coordinator"] == 0.0
    assert set(spent) == set(bench.GROUPS)


def test_drain_reports_per_task_cpu():
    drain = bench.Drain(tasks=1000, completed=1000, seconds=0.5, cpu_seconds={"agents": 0.2})
    assert drain.per_second == 2000
    assert drain.cpu_us_per_task() == {"agents": pytest.approx(200.0)}


class FakeProcess:
    def __init__(self, pid: int, cmdline: list[str]):
        self.pid = pid
        self._cmdline = cmdline

    def cmdline(self) -> list[str]:
        return self._cmdline

    def name(self) -> str:
        return self._cmdline[0] if self._cmdline else "?"


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        (["ray::DispatcherActor.run"], "dispatchers"),
        (["ray::CoordinatorActor"], "Coordinator"),
        (["ray::AgentActor.execute_batch"], "agents"),
        (["ray::OrganActor"], "organs"),
        (["ray::IDLE"], "other Ray"),
        (["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--x"], "other Ray"),
    ],
)
def test_processes_are_grouped_by_their_ray_title(cmdline, group):
    assert bench._group_of(FakeProcess(99999, cmdline), postgres_pids={}) == group


def test_postgres_processes_are_grouped_by_pid():
    pids = {42: "PostgreSQL", 43: "PostgreSQL background"}
    assert bench._group_of(FakeProcess(42, ["postgres: x"]), postgres_pids=pids) == "PostgreSQL"
    assert (
        bench._group_of(FakeProcess(43, ["postgres: walwriter"]), postgres_pids=pids)
        == "PostgreSQL background"
    )
