"""Who may call the HTTP API: a bearer token, or a signed-in user's session.

Tokens are ``secrets.token_urlsafe`` strings shown once at creation; only their SHA-256 is
stored, with the first characters kept in clear (``prefix``) so tokens can be told apart in
the admin. An unsafe method (POST, …) over a session must carry the CSRF token, as any Django
form post must.

Every request is given a scope (``request.api_scope``, see :mod:`tasks.permissions`): a
session's is its user's; a token's is the smaller of the token's own scope and its owner's
current one, so demoting a user disarms their tokens at once. An operation that needs more
answers 403.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyCookie
from ninja.utils import check_csrf

from tasks import audit, permissions
from tasks.models import ApiToken

PREFIX_LENGTH = 8
# last_used_at is written at most this often per token, so a busy client does not turn
# every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


class InvalidToken(Exception):
    """A bearer token was sent, but it is unknown, revoked, expired or its user is inactive."""


class CsrfRequired(Exception):
    """A session-authenticated unsafe request without a valid CSRF token."""


class ScopeTooNarrow(Exception):
    """The caller is authenticated but may not do this (a 403 saying what it needs)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    user: AbstractBaseUser,
    *,
    name: str = "",
    scope: str = permissions.READ,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Make a token for ``user``; returns the stored row and the token, which is not kept."""
    if scope not in permissions.SCOPES:
        raise ValueError(f"scope must be one of {', '.join(permissions.SCOPES)}, not {scope!r}")
    token = secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=token[:PREFIX_LENGTH],
        token_hash=hash_token(token),
        scope=scope,
        expires_at=expires_at,
    )
    return row, token


def issue_token(
    user: AbstractBaseUser,
    actor: audit.Actor,
    *,
    name: str = "",
    scope: str = permissions.READ,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """:func:`create_token` on ``actor``'s behalf, recorded in the audit trail."""
    with transaction.atomic():
        row, token = create_token(user, name=name, scope=scope, expires_at=expires_at)
        audit.record(
            actor,
            "token.create",
            target=f"{row} of {user.get_username()}",
            detail={
                "scope": scope,
                **({"expires_at": expires_at.isoformat()} if expires_at else {}),
            },
        )
    return row, token


def token_for(token: str) -> ApiToken | None:
    """The live token row (not revoked, not expired, its user active), noting its use."""
    if not token:
        return None
    now = timezone.now()
    row = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(token), revoked=False, user__is_active=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    if row is None:
        return None
    ApiToken.objects.filter(pk=row.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    return row


def token_scope(token: str) -> str | None:
    """What a bearer token may do now: its scope capped by its owner's current power."""
    row = token_for(token)
    if row is None:
        return None
    return permissions.narrower(row.scope, permissions.user_scope(row.user))


def user_for_token(token: str) -> AbstractBaseUser | None:
    """The active user a live token belongs to (and note its use), else None."""
    row = token_for(token)
    return None if row is None else row.user


def revoke_tokens(tokens: QuerySet[ApiToken], actor: audit.Actor) -> int:
    """Revoke every token of ``tokens`` on ``actor``'s behalf (recorded); returns how many
    were live."""
    with transaction.atomic():
        live = list(tokens.filter(revoked=False).select_related("user").select_for_update())
        ApiToken.objects.filter(pk__in=[row.pk for row in live]).update(revoked=True)
        for row in live:
            audit.record(actor, "token.revoke", target=f"{row} of {row.user.get_username()}")
    return len(live)


def _require(request: HttpRequest, scope: str | None, needed: str, hint: str) -> None:
    request.api_scope = scope
    if not permissions.allows(scope, needed):
        have = f"only {scope!r}" if scope else "none"
        raise ScopeTooNarrow(
            f"this needs the {needed!r} scope; the credentials have {have}: {hint}"
        )


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>``; a wrong token is an error, not a fall-through."""

    def __init__(self, needed: str = permissions.READ) -> None:
        super().__init__()
        self.needed = needed

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = token_for(token.strip())
        if row is None:
            raise InvalidToken(
                "the bearer token is unknown, revoked or expired; "
                "create one with `python manage.py createapitoken USERNAME`"
            )
        owner_scope = permissions.user_scope(row.user)
        scope = permissions.narrower(row.scope, owner_scope)
        if permissions.allows(owner_scope, self.needed):
            hint = f"make a token with --scope {self.needed}"
        else:
            hint = f"the token's owner lacks it; {permissions.missing_scope_message(self.needed)}"
        _require(request, scope, self.needed, hint)
        request.api_token = row  # the audit trail names the token an action came through
        return row.user


class UserSession(APIKeyCookie):
    """A signed-in user's session (dashboard or admin login), CSRF-checked for unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def __init__(self, needed: str = permissions.READ) -> None:
        # CSRF is checked in authenticate, and only for signed-in sessions, so a request with
        # no credentials at all gets a 401 rather than a CSRF complaint.
        super().__init__(csrf=False)
        self.needed = needed

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if key and "\x00" in key:
            # No session key holds NUL, and looking one up makes PostgreSQL raise (a 500).
            return None
        user = getattr(request, "user", None)
        if user is None or not (user.is_authenticated and user.is_active):
            return None
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise CsrfRequired(
                "CSRF check failed: a session-authenticated request must send the csrftoken "
                "cookie's value in the X-CSRFToken header (or use a bearer token)"
            )
        hint = permissions.missing_scope_message(self.needed)
        _require(request, permissions.user_scope(user), self.needed, hint)
        return user


def api_auth_for(needed: str) -> list:
    """The API's credentials, admitting only callers whose scope reaches ``needed``."""
    return [BearerToken(needed), UserSession(needed)]


def require_scope(request: HttpRequest, needed: str) -> None:
    """Refuse (403) a request whose authenticated scope is below ``needed``."""
    hint = (
        "a token does no more than its own scope and its owner's permissions; "
        f"{permissions.missing_scope_message(needed)}"
    )
    _require(request, getattr(request, "api_scope", None), needed, hint)


api_auth = api_auth_for(permissions.READ)
operate_auth = api_auth_for(permissions.OPERATE)
admin_auth = api_auth_for(permissions.ADMIN)
