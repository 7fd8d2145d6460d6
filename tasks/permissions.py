"""Who may do what: the one rule, for the dashboard, the API, tokens, sockets and the admin.

Three scopes, each including the ones before it, each held through a Django permission:

- ``read`` (``tasks.view_task``): the dashboard's pages and live updates, the API's GETs,
  ``/metrics``, health details;
- ``operate`` (``tasks.operate_task``): also submit, run now, cancel, bulk actions;
- ``admin`` (``organism.control_organism``): also organism control, its endpoints and the
  control task types (``shutdown_organism``, …).

A user holds the widest scope whose permission they have, together with every narrower one's;
a superuser holds them all; an inactive or anonymous user none. The groups ``viewer``,
``operator`` and ``organism admin`` (made by migration ``tasks.0010_permission_groups``) carry
exactly these sets, so adding a user to one group is all it takes. A token's power is the
smaller of its own scope and what its owner may do now, decided on every request.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

READ = "read"
OPERATE = "operate"
ADMIN = "admin"
SCOPES = (READ, OPERATE, ADMIN)  # narrowest first

# The Django permission each scope adds to the ones before it.
SCOPE_PERMISSIONS = {
    READ: "tasks.view_task",
    OPERATE: "tasks.operate_task",
    ADMIN: "organism.control_organism",
}
# The group that grants each scope, holding that scope's permission and every narrower one's.
SCOPE_GROUPS = {READ: "viewer", OPERATE: "operator", ADMIN: "organism admin"}


def user_scope(user: AbstractBaseUser | None) -> str | None:
    """The widest scope ``user`` holds now, or None."""
    if user is None or not (user.is_authenticated and user.is_active):
        return None
    if user.is_superuser:
        return ADMIN
    held = None
    for scope in SCOPES:
        if not user.has_perm(SCOPE_PERMISSIONS[scope]):
            break
        held = scope
    return held


def user_may(user: AbstractBaseUser | None, needed: str) -> bool:
    """Whether ``user`` holds ``needed`` (or a wider scope) now."""
    return allows(user_scope(user), needed)


def narrower(a: str | None, b: str | None) -> str | None:
    """The smaller of two scopes (None, no scope at all, is smallest)."""
    if a is None or b is None:
        return None
    return SCOPES[min(SCOPES.index(a), SCOPES.index(b))]


def allows(scope: str | None, needed: str) -> bool:
    return scope is not None and SCOPES.index(scope) >= SCOPES.index(needed)


def group_permissions(scope: str) -> list[str]:
    """The permissions (``app_label.codename``) of the group granting ``scope``."""
    return [SCOPE_PERMISSIONS[s] for s in SCOPES[: SCOPES.index(scope) + 1]]


def missing_scope_message(needed: str) -> str:
    """What to tell a signed-in user who lacks ``needed``."""
    return (
        f"this needs the {SCOPE_GROUPS[needed]!r} permission; an administrator can add you to the "
        f"{SCOPE_GROUPS[needed]!r} group (see the README, 'Permissions')"
    )


def submit_refusal(scope: str | None, task_type: str) -> str | None:
    """Why a caller holding ``scope`` may not queue ``task_type`` (by hand or by schedule), or
    None when they may."""
    needed = scope_to_submit(task_type)
    return None if allows(scope, needed) else missing_scope_message(needed).capitalize()


def scope_to_submit(task_type: str) -> str:
    """Queueing an organism control type (``shutdown_organism``, …) is organism control."""
    from organism.handlers import CONTROL_TYPES

    return ADMIN if task_type in CONTROL_TYPES else OPERATE


class UnknownRole(ValueError):
    """A role that is not one of the groups of SCOPE_GROUPS."""


def set_role(user: AbstractBaseUser, role: str | None) -> None:
    """Make ``user`` a member of the group ``role`` and of no other SeedCore group (``None``:
    of none). Other groups, and a superuser's status, are left alone."""
    from django.contrib.auth.models import Group

    if role is not None and role not in SCOPE_GROUPS.values():
        raise UnknownRole(
            f"role must be one of {', '.join(repr(name) for name in SCOPE_GROUPS.values())}, "
            f"not {role!r}"
        )
    groups = {group.name: group for group in Group.objects.filter(name__in=SCOPE_GROUPS.values())}
    if role is not None and role not in groups:
        raise UnknownRole(f"the group {role!r} does not exist; run `python manage.py migrate`")
    user.groups.remove(*(group for name, group in groups.items() if name != role))
    if role is not None:
        user.groups.add(groups[role])
