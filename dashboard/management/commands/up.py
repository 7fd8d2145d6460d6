"""``manage.py up``: what ``python dev.py`` runs — migrate, make sure an admin exists, then
serve the web app and run ``rundispatcher`` beside it as a child process, so tasks flow; a
dispatcher that dies is restarted with a backoff (organism/keeper.py)."""

import os
import signal
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from dashboard.bootstrap import ensure_admin_user
from organism.keeper import ChildKeeper

DISPATCHER_STOP_SECONDS = 30


class Command(BaseCommand):
    help = (
        "Migrate, create the first admin user if there is none, and serve SeedCore with its "
        "dispatcher (`manage.py rundispatcher`) running beside the web server."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-dispatcher", action="store_true", help="serve only; run no dispatcher"
        )

    def handle(self, *args, addrport: str, no_dispatcher: bool, **options):
        if os.environ.get("RUN_MAIN") == "true":
            # The autoreloader's server process runs this command again: the outer process
            # has migrated and started the dispatcher already.
            call_command("runserver", addrport)
            return
        call_command("migrate", interactive=False, verbosity=0)
        created = ensure_admin_user()
        if created:
            username, password = created
            self.stdout.write(
                self.style.SUCCESS(f"Created admin user {username!r} with password {password!r}")
            )
        dispatcher = None if no_dispatcher else self.start_dispatcher()
        # SIGTERM (docker stop, a process manager) ends the server like Ctrl-C does, so the
        # dispatcher below is stopped too rather than orphaned.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            call_command("runserver", addrport)
        finally:
            if dispatcher is not None:
                dispatcher.stop()

    def start_dispatcher(self) -> ChildKeeper:
        manage = str(settings.BASE_DIR / "manage.py")
        keeper = ChildKeeper(
            [sys.executable, manage, "rundispatcher"],
            say=lambda message: self.stderr.write(f"up: {message}"),
            stop_timeout=DISPATCHER_STOP_SECONDS,
        )
        process = keeper.start()
        self.stdout.write(f"Started the dispatcher (manage.py rundispatcher, pid {process.pid})")
        return keeper


def _interrupt(signum, frame):
    raise KeyboardInterrupt
