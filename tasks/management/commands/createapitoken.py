"""``manage.py createapitoken USERNAME``: make an API token and print it, once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tasks.auth import create_token


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print it on stdout. Only its hash is stored, so "
        "it cannot be shown again; revoke it in the admin (API tokens)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label to tell the token apart")

    def handle(self, *args, username: str, name: str, **options):
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(
                f"no user named {username!r}; create one first with "
                "`python manage.py createsuperuser`"
            ) from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive; activate it in the admin first")
        row, token = create_token(user, name=name)
        self.stdout.write(token)
        self.stderr.write(
            f"Created token {row.prefix}… for {username}. Keep it now: it is not shown again. "
            "Send it as `Authorization: Bearer <token>`."
        )
