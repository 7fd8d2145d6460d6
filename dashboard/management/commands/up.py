"""``manage.py up``: what ``python dev.py`` runs — migrate, make sure an admin exists, then
serve the web app and run ``rundispatcher`` beside it as a child process, so tasks flow."""

import os
import signal
import subprocess
import sys
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from dashboard.bootstrap import ensure_admin_user

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
                self.stop_dispatcher(dispatcher)

    def start_dispatcher(self) -> subprocess.Popen:
        manage = str(settings.BASE_DIR / "manage.py")
        process = subprocess.Popen([sys.executable, manage, "rundispatcher"])
        self.stdout.write(f"Started the dispatcher (manage.py rundispatcher, pid {process.pid})")

        def watch():
            code = process.wait()
            if code not in (0, -signal.SIGINT, -signal.SIGTERM, signal.SIGTERM + 128):
                self.stderr.write(
                    f"The dispatcher exited with code {code}: tasks stay queued until it runs. "
                    "See its message above; restart with `python manage.py rundispatcher`."
                )

        threading.Thread(target=watch, daemon=True).start()
        return process

    def stop_dispatcher(self, process: subprocess.Popen) -> None:
        """Ask it to stop gracefully (SIGTERM; Ctrl-C may have sent SIGINT already), then wait."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=DISPATCHER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
