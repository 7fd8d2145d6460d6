"""``manage.py up``: what ``python dev.py`` runs — migrate, make sure an admin exists, serve."""

from django.core.management import call_command
from django.core.management.base import BaseCommand

from dashboard.bootstrap import ensure_admin_user


class Command(BaseCommand):
    help = "Migrate, create the first admin user if there is none, and serve SeedCore."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options):
        call_command("migrate", interactive=False, verbosity=0)
        created = ensure_admin_user()
        if created:
            username, password = created
            self.stdout.write(
                self.style.SUCCESS(f"Created admin user {username!r} with password {password!r}")
            )
        call_command("runserver", addrport)
