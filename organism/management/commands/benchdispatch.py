"""``manage.py benchdispatch``: throughput of a released backlog, handler start latency, and the
CPU each process spends per task, end to end through Ray, on the defaults (``organism.bench``)."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from organism import bench, profiling, supervisor
from organism.dispatcher import DispatcherConfig

TAG = "benchdispatch"


class Command(BaseCommand):
    help = (
        "Start rundispatcher's organism and dispatchers, warm them up, then: insert probe "
        "tasks one at a time and print enqueue-to-handler-start p50/p95/p99; then release a "
        "held backlog of N tasks at once and print tasks/s and CPU µs per task per process "
        "group. Runs on the SEEDCORE_* defaults unless told otherwise."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tasks", type=int, default=20_000, help="backlog size")
        parser.add_argument(
            "--sleep-ms",
            type=float,
            default=0.0,
            help="each backlog task's handler time (0: the echo handler; else probe sleeping)",
        )
        parser.add_argument("--latency-tasks", type=int, default=200)
        parser.add_argument("--rate", type=float, default=50.0, help="latency tasks per second")
        parser.add_argument("--dispatchers", type=int, default=None, help="default: settings")
        parser.add_argument("--batch", type=int, default=None, help="claim batch (override)")
        parser.add_argument("--in-flight", type=int, default=None, help="in flight (override)")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the drain")
        parser.add_argument(
            "--profile",
            metavar="DIR",
            default=None,
            help="during the drain, sample the actors with py-spy (stacks kept in DIR) and "
            "read pg_stat_statements; print where the CPU went",
        )

    def handle(self, *args, **options):
        if options["tasks"] < 1 or options["latency_tasks"] < 0 or options["rate"] <= 0:
            raise CommandError("--tasks must be ≥ 1, --latency-tasks ≥ 0 and --rate > 0")
        overrides = {
            name: options[option]
            for name, option in (("claim_batch", "batch"), ("max_in_flight", "in_flight"))
            if options[option] is not None
        }
        run_options = supervisor.SupervisorOptions(
            config=DispatcherConfig.from_settings(**overrides)
        )
        if options["dispatchers"]:
            run_options.dispatchers = options["dispatchers"]
        try:
            supervisor.check_database()
            supervisor.connect(run_options, start_local=True)
            boss = supervisor.Supervisor(run_options, self.stdout.write)
            boss.bootstrap()
        except supervisor.SupervisorError as exc:
            raise CommandError(str(exc)) from None
        run = f"{TAG}-{uuid.uuid4().hex[:8]}"
        config = run_options.config
        self.stdout.write(
            f"{run_options.dispatchers} dispatchers, "
            f"claim batch {config.claim_batch or 'sized to the backlog'}, "
            f"max in flight {config.max_in_flight}{' (overridden)' if overrides else ''}; "
            f"{os.cpu_count()} CPUs"
        )
        try:
            self.warm_up(run)
            # Starts first, while the dispatchers are idle and the table quiet, as a trickle of
            # tasks finds them; after the drain, autovacuum and Ray's clean-up of it would run
            # beside the probes.
            if options["latency_tasks"]:
                self.latency(run, options)
            self.throughput(run, options)
        finally:
            boss.stop_dispatchers()
            bench.forget(run)

    def warm_up(self, run: str) -> None:
        # Actors, agents and connections up before anything is timed.
        result = bench.drain(f"{run}-warm", [{"type": "echo"}] * 200, timeout=120)
        if result.completed < result.tasks:
            raise CommandError(
                f"warm-up: only {result.completed} of {result.tasks} tasks completed; "
                "is the Coordinator healthy? (python manage.py rundispatcher shows why)"
            )

    def throughput(self, run: str, options: dict) -> None:
        count, sleep_ms = options["tasks"], options["sleep_ms"]
        spec = (
            {"type": "probe", "params": {"sleep": sleep_ms / 1000}}
            if sleep_ms
            else {"type": "echo", "params": {}}
        )
        load_before = os.getloadavg()[0]
        spy, on_released = self.start_profile(options["profile"])
        try:
            result = bench.drain(
                f"{run}-drain",
                itertools.repeat(spec, count),
                timeout=options["timeout"],
                on_released=on_released,
            )
        finally:
            if spy is not None:
                spy.stop()
        what = f"{sleep_ms:g} ms probe" if sleep_ms else "echo"
        self.stdout.write(
            f"throughput: {result.completed:,}/{count:,} {what} tasks in {result.seconds:.2f} s "
            f"= {result.per_second:,.0f} tasks/s (release → last COMPLETED, database clock; "
            f"load average {load_before:.2f} → {os.getloadavg()[0]:.2f})"
        )
        self.stdout.write(
            f"claims: {result.claims:,} ({result.per_claim:,.1f} tasks per claim)"
            + (f"; at most {result.peak_running:,} handlers at once" if sleep_ms else "")
        )
        per_task = result.cpu_us_per_task()
        self.stdout.write("CPU per task (µs), by process group:")
        for group in bench.GROUPS:
            self.stdout.write(f"  {group:<22} {per_task[group]:>8.0f}")
        self.stdout.write(f"  {'total':<22} {sum(per_task.values()):>8.0f}")
        self.stdout.write("resident memory of the largest process per group (MiB), start → peak:")
        for group, (first, peak) in sorted(result.memory.items()):
            self.stdout.write(f"  {group:<22} {first:>8.0f} → {peak:.0f}")
        if options["profile"]:
            self.print_profile(spy, result.completed)

    def start_profile(self, directory: str | None):
        """py-spy on every dispatcher, Coordinator and agent process, and a callback that
        resets pg_stat_statements at the release (None, None without ``--profile``)."""
        if directory is None:
            return None, None
        pids = {
            pid: group
            for pid, (group, _) in bench.cpu_snapshot().items()
            if group in ("dispatchers", "Coordinator", "agents")
        }
        try:
            spy = profiling.PySpy(pids, Path(directory))
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        self.statements = profiling.statements_available()
        return spy, profiling.reset_statements if self.statements else None

    def print_profile(self, spy, completed: int) -> None:
        self.stdout.write(f"py-spy stacks in {spy.directory}; own CPU by frame:")
        for frames in spy.frames():
            self.stdout.write(f"  {frames.group} ({frames.samples:,} samples)")
            for frame, share in frames.top:
                self.stdout.write(f"    {share:6.1%}  {frame}")
        if not self.statements:
            self.stdout.write(
                "PostgreSQL statements: pg_stat_statements is not available; start the server "
                "with shared_preload_libraries = 'pg_stat_statements' to see them"
            )
            return
        self.stdout.write("PostgreSQL statements by execution time (µs per task, calls, rows):")
        for statement in profiling.top_statements():
            per_task = statement.exec_ms * 1000 / max(completed, 1)
            self.stdout.write(
                f"  {per_task:8.1f}  {statement.calls:>7,}  {statement.rows:>7,}  {statement.text}"
            )

    def latency(self, run: str, options: dict) -> None:
        count, rate = options["latency_tasks"], options["rate"]
        try:
            result = bench.start_latency(f"{run}-latency", count, rate)
        except bench.NotListening as exc:
            raise CommandError(str(exc)) from None
        if result.started < 2:
            raise CommandError("the latency tasks did not start; is the Coordinator healthy?")
        self.stdout.write(
            f"start latency: {result.started}/{count} probe tasks at {rate:g}/s, enqueue → "
            f"handler start p50 {result.p50:.1f} ms, p95 {result.p95:.1f} ms, "
            f"p99 {result.p99:.1f} ms, max {result.max:.1f} ms (of which enqueue → claim p50 "
            f"{result.claim_p50:.1f} ms)"
        )
        call = bench.ray_call_latency(min(count, 200), rate)
        self.stdout.write(
            f"  where a start goes (p50): enqueue → NOTIFY {result.notify_p50:.1f} ms "
            f"(PostgreSQL: insert, durable commit, NOTIFY); → claim "
            f"{result.claim_p50 - result.notify_p50:.1f} ms; claim → handler start "
            f"{result.p50 - result.claim_p50:.1f} ms (two Ray actor calls: dispatcher → "
            f"Coordinator → agent)"
        )
        self.stdout.write(
            f"  a bare Ray actor call on this machine, at the same rate: {call:.1f} ms p50 "
            "from the call to the method's start"
        )
