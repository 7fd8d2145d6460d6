"""``manage.py createapitoken USERNAME [--scope read|operate|admin] [--expires 30d]``: make an
API token and print it, once."""

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tasks import audit, permissions
from tasks.auth import issue_token
from tasks.management.commands._users import user_named

UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if not match or int(match.group(1)) == 0:
        raise CommandError(f"--expires takes a duration like 30d, 12h, 90m or 2w, not {text!r}")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print it on stdout. Only its hash is stored, so "
        "it cannot be shown again; revoke it in the admin (API tokens)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label to tell the token apart")
        parser.add_argument(
            "--scope",
            choices=permissions.SCOPES,
            default=permissions.READ,
            help="read (default): reads and /metrics; operate: also submit, run now, cancel; "
            "admin: also organism control. Never more than the user may do at the time.",
        )
        parser.add_argument("--expires", default=None, help="e.g. 30d, 12h: stop working after")

    def handle(self, *args, username: str, name: str, scope: str, expires: str | None, **options):
        user = user_named(username)
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive; activate it in the admin first")
        user_scope = permissions.user_scope(user)
        if user_scope is None:
            raise CommandError(
                f"user {username!r} holds no SeedCore permission, so a token could do nothing; "
                "add them to a group first (viewer, operator or organism admin: see the README, "
                "'Permissions')"
            )
        expires_at = timezone.now() + parse_duration(expires) if expires else None
        row, token = issue_token(
            user, audit.Actor.cli(), name=name, scope=scope, expires_at=expires_at
        )
        self.stdout.write(token)
        until = f", until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        self.stderr.write(
            f"Created a {scope} token {row.prefix}… for {username}{until}. Keep it now: it is "
            "not shown again. Send it as `Authorization: Bearer <token>`."
        )
        if not permissions.allows(user_scope, scope):
            self.stderr.write(
                f"Note: {username} may only {user_scope} now, so the token does no more than "
                "that until they are given more."
            )
