"""``manage.py prunetasks --older-than DAYS [--status S …] [--dry-run]``: delete old finished tasks.

Thin over ``tasks.queue.prune``: short batches, each its own transaction, so the queue keeps
running meanwhile. The supervisor does the same on a schedule (SEEDCORE_RETENTION_DAYS).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks import queue
from tasks.models import FINISHED_STATUSES

FINISHED = [s.value for s in FINISHED_STATUSES]


class Command(BaseCommand):
    help = "Delete finished tasks (COMPLETED, FAILED, CANCELLED) last changed over DAYS ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            type=float,
            metavar="DAYS",
            help="age in days (fractions allowed) since the task last changed",
        )
        parser.add_argument(
            "--status",
            action="append",
            metavar="STATUS",
            help=f"repeatable; one of {', '.join(FINISHED)} (default: all three)",
        )
        parser.add_argument("--batch-size", type=int, default=1000, help="rows per transaction")
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would go, delete nothing"
        )

    def handle(self, *args, **options) -> None:
        days = options["older_than"]
        if not days >= 0 or days == float("inf"):  # also refuses NaN
            raise CommandError("--older-than takes a number of days of at least 0, e.g. 30")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        statuses = sorted({s.strip().upper() for s in options["status"] or FINISHED})
        bad = [s for s in statuses if s not in FINISHED]
        if bad:
            raise CommandError(
                f"cannot prune {', '.join(bad)} tasks: --status takes finished statuses only "
                f"({', '.join(FINISHED)})"
            )
        count = queue.prune(
            older_than=timedelta(days=days),
            statuses=statuses,
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
        )
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{verb} {count} task(s) ({', '.join(statuses)}) unchanged for {days:g} day(s)"
        )
