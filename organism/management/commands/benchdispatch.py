"""``manage.py benchdispatch``: throughput and start latency of the dispatchers."""

import statistics
import time
import uuid

from django.core.management.base import BaseCommand, CommandError

from organism import supervisor
from organism.dispatcher import DispatcherConfig
from tasks import queue
from tasks.models import Status, Task

UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.RETRY)


class Command(BaseCommand):
    help = (
        "Enqueue N echo tasks, run the dispatchers until drained and print tasks/s; then "
        "enqueue tasks one by one at low load and print enqueue-to-start latency p50/p95."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tasks", type=int, default=20_000)
        parser.add_argument("--latency-tasks", type=int, default=200)
        parser.add_argument("--gap-ms", type=float, default=20.0)
        parser.add_argument("--dispatchers", type=int, default=None)
        parser.add_argument("--batch", type=int, default=200, help="claim batch size")
        parser.add_argument("--in-flight", type=int, default=2000, help="max in flight each")

    def handle(self, *args, **options):
        config = DispatcherConfig.from_settings(
            claim_batch=options["batch"], max_in_flight=options["in_flight"]
        )
        run_options = supervisor.SupervisorOptions(config=config)
        if options["dispatchers"]:
            run_options.dispatchers = options["dispatchers"]
        try:
            supervisor.check_database()
            supervisor.connect(run_options, start_local=True)
            boss = supervisor.Supervisor(run_options, self.stdout.write)
            boss.bootstrap()
        except supervisor.SupervisorError as exc:
            raise CommandError(str(exc)) from None
        try:
            self.throughput(boss, options["tasks"])
            self.latency(options["latency_tasks"], options["gap_ms"] / 1000)
        finally:
            boss.stop_dispatchers()

    def throughput(self, boss: supervisor.Supervisor, count: int) -> None:
        # Fill the queue while the dispatchers are stopped, so they start from a full queue.
        boss.stop_dispatchers(kill=False)
        tag = f"bench-{uuid.uuid4().hex[:8]}"
        queue.enqueue_many(
            {"type": "echo", "params": {"i": i}, "description": tag} for i in range(count)
        )
        started = time.perf_counter()
        boss.ensure_dispatchers()
        while self.unfinished(tag):
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        completed = Task.objects.filter(description=tag, status=Status.COMPLETED).count()
        self.stdout.write(
            f"throughput: {completed}/{count} echo tasks completed in {elapsed:.2f} s = "
            f"{completed / elapsed:,.0f} tasks/s ({boss.options.dispatchers} dispatchers)"
        )

    def latency(self, count: int, gap: float) -> None:
        tag = f"bench-latency-{uuid.uuid4().hex[:8]}"
        for i in range(count):
            queue.enqueue(type="echo", params={"i": i}, description=tag)
            time.sleep(gap)
        deadline = time.monotonic() + 60
        while self.unfinished(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        waits = [
            (row.locked_at - row.created_at).total_seconds() * 1000
            for row in Task.objects.filter(description=tag, locked_at__isnull=False)
        ]
        if len(waits) < 2:
            raise CommandError("the latency tasks did not start; is the Coordinator healthy?")
        p95 = statistics.quantiles(waits, n=20)[-1]
        self.stdout.write(
            f"latency: {len(waits)} tasks {gap * 1000:.0f} ms apart, enqueue->start "
            f"p50 {statistics.median(waits):.1f} ms, p95 {p95:.1f} ms, max {max(waits):.1f} ms"
        )

    def unfinished(self, tag: str) -> bool:
        return Task.objects.filter(description=tag, status__in=UNFINISHED).exists()
