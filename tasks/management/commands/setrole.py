"""``manage.py setrole USERNAME viewer|operator|organism-admin|none``: give a user one SeedCore
role (tasks.permissions), replacing the one they had."""

from django.core.management.base import BaseCommand, CommandError

from tasks import permissions
from tasks.management.commands._users import user_named

NONE = "none"


def role_named(text: str) -> str | None:
    """``organism-admin`` and ``organism_admin`` name the group ``organism admin``."""
    name = text.strip().lower().replace("-", " ").replace("_", " ")
    return None if name == NONE else name


class Command(BaseCommand):
    help = (
        "Put USERNAME in one SeedCore group: viewer (read the dashboard and the API), operator "
        "(also submit, run now, cancel, bulk actions) or organism-admin (also organism "
        "control); none removes them from all three. The Django admin also needs is_staff."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", help="viewer, operator, organism-admin or none")

    def handle(self, *args, username: str, role: str, **options):
        user = user_named(username)
        try:
            permissions.set_role(user, role_named(role))
        except permissions.UnknownRole as exc:
            raise CommandError(f"{exc} (or 'none')") from None
        fresh = type(user).objects.get(pk=user.pk)  # the old one caches its permissions
        scope = permissions.user_scope(fresh)
        held = ", ".join(permissions.SCOPES[: permissions.SCOPES.index(scope) + 1]) if scope else ""
        self.stdout.write(f"{username} may now: {held or 'nothing'}.")
        if user.is_superuser:
            self.stdout.write(f"Note: {username} is a superuser, who may do everything anyway.")
