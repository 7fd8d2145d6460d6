"""``manage.py benchqueue --tasks N``: claim+complete throughput of the queue engine.

For each batch size, N no-op tasks are enqueued and drained by worker processes twice: once
through the engine (``queue.claim`` + ``queue.complete_many``) and once by a bare psycopg
loop running the very same statements (``queue.claim_statement`` and
``queue.complete_many_statement``), so the ratio is the engine's own cost. Run it against a
scratch database, since it claims every claimable task it finds. DEBUG logs every query: turn
it off (and set SECRET_KEY) for figures worth quoting.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as stdlib_queue
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from seedcore_site.database import database_url

BENCH_TYPE = "bench.noop"
ENQUEUE_CHUNK = 5000
LEASE_SECONDS = 300.0
WORKER_TIMEOUT = 600.0


class Command(BaseCommand):
    help = "Measure claim+complete throughput of the queue engine against a bare psycopg loop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tasks", type=int, default=20000, help="tasks per run")
        parser.add_argument("--workers", type=int, default=2, help="worker processes")
        parser.add_argument(
            "--batches", default="1,50", help="comma-separated claim batch sizes (default 1,50)"
        )

    def handle(self, *args, **options) -> None:
        from tasks.models import Status, Task

        tasks, workers = options["tasks"], options["workers"]
        if tasks < 1 or workers < 1:
            raise CommandError("--tasks and --workers must be at least 1")
        try:
            batches = [int(b) for b in options["batches"].split(",") if b.strip()]
        except ValueError:
            raise CommandError("--batches takes whole numbers separated by commas") from None
        if not batches or min(batches) < 1:
            raise CommandError("--batches takes whole numbers of at least 1, e.g. 1,50")
        unfinished = (Status.QUEUED, Status.RETRY, Status.RUNNING)
        if Task.objects.filter(status__in=unfinished).exists():
            raise CommandError(
                "the tasks table holds unfinished tasks, and the benchmark would claim them: "
                "point DATABASE_URL at a scratch database"
            )
        if settings.DEBUG:
            self.stderr.write(
                "DEBUG is on, so Django logs every query: set DEBUG=0 for real figures"
            )

        self.stdout.write(f"{tasks} tasks per run, {workers} worker processes")
        self.stdout.write(
            f"{'batch':>6} {'engine tasks/s':>15} {'bare tasks/s':>13} {'ratio':>7}"
            f" {'engine CPU us/task':>19} {'bare CPU us/task':>17}"
        )
        for batch in batches:
            bare, bare_cpu = self._run("bare", tasks=tasks, workers=workers, batch=batch)
            engine, engine_cpu = self._run("engine", tasks=tasks, workers=workers, batch=batch)
            self.stdout.write(
                f"{batch:>6} {engine:>15,.0f} {bare:>13,.0f} {engine / bare:>7.0%}"
                f" {engine_cpu:>19,.0f} {bare_cpu:>17,.0f}"
            )

    def _run(self, mode: str, *, tasks: int, workers: int, batch: int) -> tuple[float, float]:
        """Enqueue ``tasks`` tasks and drain them with ``workers`` processes. Returns tasks
        per second and the workers' own CPU time per task in microseconds (the figure a busy
        machine disturbs least)."""
        from django.db import connection

        from tasks import queue
        from tasks.models import Task

        for start in range(0, tasks, ENQUEUE_CHUNK):
            count = min(ENQUEUE_CHUNK, tasks - start)
            queue.enqueue_many([{"type": BENCH_TYPE} for _ in range(count)])
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE tasks")
        try:
            reports = _drain(mode, workers=workers, batch=batch)
        finally:
            Task.objects.filter(type=BENCH_TYPE).delete()
        done = sum(report["done"] for report in reports)
        if done != tasks:
            raise CommandError(f"{mode} run at batch {batch} finished {done} of {tasks} tasks")
        elapsed = max(r["end"] for r in reports) - min(r["start"] for r in reports)
        return done / elapsed, 1e6 * sum(r["cpu"] for r in reports) / done


def _drain(mode: str, *, workers: int, batch: int) -> list[dict]:
    from django.db import connection

    from tasks import queue

    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(workers)
    reports = context.Queue()
    if mode == "engine":
        target = _engine_worker
        setup = (
            os.environ.get("DJANGO_SETTINGS_MODULE", ""),
            database_url(connection.settings_dict),
        )
    else:
        target = _bare_worker
        setup = (
            database_url(connection.settings_dict),
            queue.claim_statement(),
            queue.complete_many_statement(),
        )
    processes = [
        context.Process(target=target, args=(f"bench-{mode}-{n}", batch, setup, ready, reports))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    collected = []
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        while len(collected) < workers:
            try:
                collected.append(reports.get(timeout=1))
            except stdlib_queue.Empty:
                crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if crashed:
                    raise CommandError(f"a {mode} worker crashed (exit codes {crashed})") from None
                if time.monotonic() > deadline:
                    raise CommandError(f"{mode} workers took over {WORKER_TIMEOUT:.0f} s") from None
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return collected


def _engine_worker(name: str, batch: int, setup: tuple, ready, reports) -> None:
    settings_module, database_url = setup
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ["DATABASE_URL"] = database_url
    import django

    django.setup()
    from tasks import queue

    ready.wait(timeout=60)
    start, cpu, done = time.time(), time.process_time(), 0
    while rows := queue.claim(dispatcher=name, batch=batch, lease_seconds=LEASE_SECONDS):
        queue.complete_many(
            dispatcher=name, results=[(row["id"], row["attempts"], None) for row in rows]
        )
        done += len(rows)
    reports.put(
        {"done": done, "start": start, "end": time.time(), "cpu": time.process_time() - cpu}
    )


def _bare_worker(name: str, batch: int, setup: tuple, ready, reports) -> None:
    import json

    import psycopg

    database_url, claim_sql, complete_sql = setup
    with psycopg.connect(database_url, autocommit=True) as connection:
        cursor = connection.cursor()
        ready.wait(timeout=60)
        start, cpu, done = time.time(), time.process_time(), 0
        while True:
            cursor.execute(claim_sql, [batch, name, LEASE_SECONDS])
            columns = [column.name for column in cursor.description]
            ids, attempts = columns.index("id"), columns.index("attempts")
            rows = [row for row in cursor.fetchall() if row[ids] is not None]
            if not rows:
                break
            cursor.execute(
                complete_sql,
                [
                    json.dumps([[str(row[ids]), row[attempts], None] for row in rows]),
                    name,
                ],
            )
            cursor.fetchall()
            done += len(rows)
    reports.put(
        {"done": done, "start": start, "end": time.time(), "cpu": time.process_time() - cpu}
    )
