"""What an API caller may do: the one rule for token scopes.

Three scopes, each including the ones before it: ``read`` (GET endpoints, ``/metrics``, health
details), ``operate`` (submit, run now, cancel), ``admin`` (organism control: its endpoints and
the control task types). A token's power is the smaller of its own scope and what its owner may
do now, decided on every request. Until per-user permissions exist (issue #15 finding 1), an
owner's power is all-or-nothing: an active staff member (or superuser) may do everything, anyone
else nothing.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

READ = "read"
OPERATE = "operate"
ADMIN = "admin"
SCOPES = (READ, OPERATE, ADMIN)  # narrowest first


def user_scope(user: AbstractBaseUser | None) -> str | None:
    """The widest scope ``user`` holds now, or None."""
    if user is None or not (user.is_authenticated and user.is_active):
        return None
    return ADMIN if (user.is_staff or user.is_superuser) else None


def narrower(a: str | None, b: str | None) -> str | None:
    """The smaller of two scopes (None, no scope at all, is smallest)."""
    if a is None or b is None:
        return None
    return SCOPES[min(SCOPES.index(a), SCOPES.index(b))]


def allows(scope: str | None, needed: str) -> bool:
    return scope is not None and SCOPES.index(scope) >= SCOPES.index(needed)


def scope_to_submit(task_type: str) -> str:
    """Queueing an organism control type (``shutdown_organism``, …) is organism control."""
    from organism.handlers import CONTROL_TYPES

    return ADMIN if task_type in CONTROL_TYPES else OPERATE
