"""``manage.py tasks list | show ID | submit TYPE | run ID | cancel ID | status ID | schedules``,
and the queue's controls: ``tasks queue``, ``tasks pause [TYPE]``, ``tasks resume [TYPE]``,
``tasks limit TYPE N|none``.

Thin over ``tasks.queue`` and ``tasks.selectors``, with the API's rules: IDs are full UUIDs
or prefixes of at least 4 hex digits, and a submitted task is checked by ``tasks.validation``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import OperationalError, ProgrammingError

from tasks import audit, operations, queue, selectors
from tasks.ids import TaskIdError
from tasks.models import Status
from tasks.validation import InvalidTask, validate_task_spec

LIST_COLUMNS = ("id", "status", "type", "attempts", "created_at", "description")
DESCRIPTION_WIDTH = 40


class Command(BaseCommand):
    help = "List, show, submit, run, cancel and poll tasks. IDs may be short prefixes."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        listing = actions.add_parser("list", help="tasks, newest first")
        listing.add_argument("--status", choices=Status.values)
        listing.add_argument("--type")
        listing.add_argument("--domain")
        listing.add_argument("--id", dest="id_prefix", help="an ID prefix")
        listing.add_argument("--limit", type=int, default=20, help="at most 500")
        listing.add_argument("--cursor", help="the next-page cursor a previous list printed")

        for name, text in (
            ("show", "one task in full"),
            ("status", "a task's status"),
            ("run", "queue a FAILED, CANCELLED or RETRY task to run now"),
            ("cancel", "cancel a task"),
        ):
            actions.add_parser(name, help=text).add_argument("id", help="a UUID or a prefix")

        submit = actions.add_parser("submit", help="queue a new task")
        submit.add_argument("type")
        submit.add_argument("--params", default="{}", help="a JSON object")
        submit.add_argument("--description")
        submit.add_argument("--domain")
        submit.add_argument("--drift-score", type=float, default=0.0)
        submit.add_argument("--priority", type=int, default=0)
        submit.add_argument(
            "--unique-key",
            help="while an unfinished task holds this key, print that task instead of a new one",
        )

        actions.add_parser("schedules", help="schedules with their next and last run")

        actions.add_parser("queue", help="what is paused, each type's limit and RUNNING count")
        for name, text in (
            ("pause", "stop claiming TYPE (every type without one); running tasks finish"),
            ("resume", "claim TYPE (every type without one) again"),
        ):
            actions.add_parser(name, help=text).add_argument("type", nargs="?", metavar="TYPE")
        limit = actions.add_parser("limit", help="cap how many tasks of TYPE run at once")
        limit.add_argument("type", metavar="TYPE")
        limit.add_argument("limit", metavar="N", help="a whole number, or `none` to clear")

        for subparser in actions.choices.values():
            subparser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, action: str, **options: Any) -> None:
        try:
            getattr(self, f"do_{action}")(options)
        except TaskIdError as exc:
            raise CommandError(f"{exc}; `manage.py tasks list` shows the IDs") from None
        except (queue.TransitionNotAllowed, queue.UniqueKeyHeld) as exc:
            raise CommandError(str(exc)) from None
        except selectors.InvalidCursor as exc:
            raise CommandError(str(exc)) from None
        except InvalidTask as exc:
            raise CommandError(f"{exc}; `manage.py tasks queue` lists the types") from None
        except OperationalError as exc:
            raise CommandError(
                f"cannot reach the database ({str(exc).strip()}); check DATABASE_URL and "
                "that the database server is running"
            ) from None
        except ProgrammingError:
            missing = selectors.pending_migrations()
            if not missing:
                raise
            raise CommandError(
                f"the database lacks {missing} migration(s): run `python manage.py migrate` "
                "(`python dev.py` does it)"
            ) from None

    # -- actions ---------------------------------------------------------------------------

    def do_list(self, options: dict[str, Any]) -> None:
        if not 1 <= options["limit"] <= selectors.MAX_PAGE:
            raise CommandError(f"--limit must be between 1 and {selectors.MAX_PAGE}")
        page = selectors.list_tasks(
            selectors.TaskFilter(
                status=options["status"],
                type=options["type"],
                domain=options["domain"],
                id_prefix=options["id_prefix"],
            ),
            cursor=options["cursor"],
            limit=options["limit"],
        )
        if options["json"]:
            return self.print_json({"items": page.items, "next_cursor": page.next_cursor})
        rows = [[self.cell(column, item[column]) for column in LIST_COLUMNS] for item in page.items]
        self.print_table([column.upper() for column in LIST_COLUMNS], rows)
        if not page.items:
            self.stdout.write("(no tasks)")
        if page.next_cursor:
            self.stdout.write(f"more: manage.py tasks list --cursor {page.next_cursor}")

    def do_show(self, options: dict[str, Any]) -> None:
        task = selectors.get_task(selectors.resolve_id(options["id"]))
        if options["json"]:
            return self.print_json(task)
        for key, value in task.items():
            if key in ("params", "result", "error_history"):
                text = json.dumps(value, indent=2, cls=DjangoJSONEncoder)
                self.stdout.write(f"{key}:\n  " + text.replace("\n", "\n  "))
            else:
                self.stdout.write(f"{key}: {self.cell(key, value, short=False)}")

    def do_status(self, options: dict[str, Any]) -> None:
        task = selectors.get_task(selectors.resolve_id(options["id"]))
        fields = {key: task[key] for key in ("id", "status", "attempts", "updated_at", "error")}
        if options["json"]:
            return self.print_json(fields)
        self.print_table(
            [key.upper() for key in fields], [[self.cell(k, v) for k, v in fields.items()]]
        )

    def do_submit(self, options: dict[str, Any]) -> None:
        try:
            params = json.loads(options["params"])
        except ValueError as exc:
            raise CommandError(f"--params is not valid JSON ({exc}); pass a JSON object") from None
        fields = ("type", "description", "domain", "drift_score", "priority", "unique_key")
        try:
            spec = validate_task_spec({"params": params, **{f: options[f] for f in fields}})
        except InvalidTask as exc:
            problems = "; ".join(
                f"--{field.replace('_', '-')}: {message}" for field, message in exc.errors.items()
            )
            raise CommandError(f"invalid task: {problems}") from None
        submitted = operations.submit(spec, audit.Actor.cli())
        if options["json"]:
            return self.print_json({**submitted.task, "existing": not submitted.created})
        verb = "queued"
        if not submitted.created:
            verb = f"existing, not queued again (it holds unique key {spec['unique_key']!r})"
        self.report(submitted.task, options, verb)

    def do_run(self, options: dict[str, Any]) -> None:
        self.report(
            operations.run_now(selectors.resolve_id(options["id"]), audit.Actor.cli()),
            options,
            "queued to run now",
        )

    def do_cancel(self, options: dict[str, Any]) -> None:
        task = operations.cancel(selectors.resolve_id(options["id"]), audit.Actor.cli())
        verb = "cancel requested" if task["status"] == Status.RUNNING else "cancelled"
        self.report(task, options, verb)

    def do_schedules(self, options: dict[str, Any]) -> None:
        schedules = selectors.list_schedules()
        if options["json"]:
            return self.print_json(schedules)
        header = ["ID", "NAME", "TYPE", "WHEN", "ENABLED", "NEXT_RUN", "LAST_RUN", "LAST_TASK"]
        rows = [
            [
                str(item["id"]),
                item["name"],
                item["type"],
                f"{item['cron']} ({item['timezone']})"
                if item["cron"]
                else f"every {item['interval_seconds']} s",
                "yes" if item["enabled"] else "paused",
                self.cell("next_run_at", item["next_run_at"]),
                self.cell("last_run_at", item["last_run_at"]),
                self.cell("id", item["last_task_id"]),
            ]
            for item in schedules
        ]
        self.print_table(header, rows)
        if not schedules:
            self.stdout.write("(no schedules; add one at /admin/tasks/schedule/)")

    def do_queue(self, options: dict[str, Any]) -> None:
        overview = selectors.queue_overview()
        if options["json"]:
            return self.print_json(overview)
        if overview["all_paused"]:
            since = self.cell("paused_at", overview["all_paused_at"])
            self.stdout.write(f"ALL CLAIMING PAUSED since {since}")
        rows = [
            [
                row["type"],
                "paused" if row["paused"] else "-",
                self.cell("paused_at", row["paused_at"]),
                self.cell("limit", row["limit"]),
                self.cell("declared", row["declared_concurrency"]),
                str(row["running"]),
            ]
            for row in overview["types"]
        ]
        self.print_table(["TYPE", "STATE", "SINCE", "LIMIT", "DECLARED", "RUNNING"], rows)
        if not rows:
            self.stdout.write("(no types queued, running or controlled)")

    def do_pause(self, options: dict[str, Any]) -> None:
        control = operations.pause_queue(options["type"], audit.Actor.cli())
        self.report_control(control, options, "paused")

    def do_resume(self, options: dict[str, Any]) -> None:
        control = operations.resume_queue(options["type"], audit.Actor.cli())
        self.report_control(control, options, "resumed")

    def do_limit(self, options: dict[str, Any]) -> None:
        text = options["limit"].strip().lower()
        if text == "none":
            limit = None
        elif text.isascii() and text.isdigit():
            limit = int(text)
        else:
            raise CommandError(f"N must be a whole number or `none`, not {options['limit']!r}")
        control = operations.set_concurrency_limit(options["type"], limit, audit.Actor.cli())
        self.report_control(control, options, "limited")

    # -- output ----------------------------------------------------------------------------

    def report(self, task: dict[str, Any], options: dict[str, Any], verb: str) -> None:
        if options["json"]:
            return self.print_json(task)
        self.stdout.write(f"{task['id']} {verb}: {task['status']}")

    def report_control(self, control: dict[str, Any], options: dict[str, Any], verb: str) -> None:
        if options["json"]:
            return self.print_json(control)
        what = f"type {control['type']}" if control["type"] else "all types"
        if verb == "limited":
            limit = control["limit"]
            self.stdout.write(
                f"{what}: at most {limit} running at once"
                if limit
                else f"{what}: no concurrency limit"
            )
        else:
            self.stdout.write(f"{what} {verb}")

    def print_json(self, value: Any) -> None:
        self.stdout.write(json.dumps(value, indent=2, cls=DjangoJSONEncoder))

    def print_table(self, header: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write(line.rstrip())

    @staticmethod
    def cell(key: str, value: Any, *, short: bool = True) -> str:
        if value is None:
            return "-"
        if key == "id" and short:
            return str(value)[:8]
        if hasattr(value, "isoformat"):
            return value.isoformat(timespec="seconds")
        text = str(value).replace("\n", " ")
        if key == "description" and short and len(text) > DESCRIPTION_WIDTH:
            return text[: DESCRIPTION_WIDTH - 1] + "…"
        return text
