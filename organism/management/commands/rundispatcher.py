"""``manage.py rundispatcher``: start and supervise SeedCore's Ray side (organism.supervisor)."""

import threading

from django.core.management.base import BaseCommand, CommandError

from organism import supervisor


class Command(BaseCommand):
    help = (
        "Start the Coordinator and the dispatcher actors on Ray (a local Ray when RAY_ADDRESS "
        "is unset) and supervise them in the foreground; Ctrl-C stops them gracefully."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dispatchers", type=int, help="how many dispatcher actors")
        parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS)")
        parser.add_argument("--namespace", help="Ray namespace (default: RAY_NAMESPACE)")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--detach", action="store_true", help="start, check and exit, leaving actors running"
        )
        mode.add_argument(
            "--stop", action="store_true", help="stop the namespace's actors gracefully"
        )

    def handle(self, *args, **options):
        chosen = {
            key: options[key]
            for key in ("dispatchers", "address", "namespace")
            if options[key] is not None
        }
        if chosen.get("dispatchers", 1) < 1:
            raise CommandError("--dispatchers must be at least 1")
        run_options = supervisor.SupervisorOptions(**chosen)

        def out(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()  # status lines must reach a pipe (a Job's log) at once

        try:
            if options["stop"]:
                supervisor.stop_namespace(run_options, out)
            elif options["detach"]:
                supervisor.run_detached(run_options, out)
            else:
                supervisor.run_foreground(run_options, out, threading.Event())
        except supervisor.SupervisorError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C before supervision began
            self.stderr.write("interrupted")
