"""What the user commands (createapitoken, setrole) share. The leading underscore keeps Django
from taking this module for a command."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandError


def user_named(username: str) -> AbstractBaseUser:
    """The user called ``username``, or a CommandError saying how to make one."""
    user_model = get_user_model()
    try:
        return user_model.objects.get(**{user_model.USERNAME_FIELD: username})
    except user_model.DoesNotExist:
        raise CommandError(
            f"no user named {username!r}; create one first with "
            "`python manage.py createsuperuser` or in the admin"
        ) from None
