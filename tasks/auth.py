"""Who may call the HTTP API: a bearer token, or a logged-in staff member's session.

Tokens are ``secrets.token_urlsafe`` strings shown once at creation; only their SHA-256 is
stored, with the first characters kept in clear (``prefix``) so tokens can be told apart in
the admin. A session only counts for staff, and an unsafe method (POST, …) over a session
must carry the CSRF token, as any Django form post must.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyCookie
from ninja.utils import check_csrf

from tasks.models import ApiToken

PREFIX_LENGTH = 8
# last_used_at is written at most this often per token, so a busy client does not turn
# every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


class InvalidToken(Exception):
    """A bearer token was sent, but it is unknown, revoked or its user is inactive."""


class CsrfRequired(Exception):
    """A session-authenticated unsafe request without a valid CSRF token."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: AbstractBaseUser, *, name: str = "") -> tuple[ApiToken, str]:
    """Make a token for ``user``; returns the stored row and the token, which is not kept."""
    token = secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user, name=name, prefix=token[:PREFIX_LENGTH], token_hash=hash_token(token)
    )
    return row, token


def user_for_token(token: str) -> AbstractBaseUser | None:
    """The active user a live token belongs to (and note its use), else None."""
    if not token:
        return None
    row = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(token), revoked=False, user__is_active=True)
        .first()
    )
    if row is None:
        return None
    now = timezone.now()
    ApiToken.objects.filter(pk=row.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    return row.user


def revoke_tokens(tokens: QuerySet[ApiToken]) -> int:
    """Revoke every token of ``tokens``; returns how many were live."""
    return tokens.filter(revoked=False).update(revoked=True)


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>``; a wrong token is an error, not a fall-through."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = user_for_token(token.strip())
        if user is None:
            raise InvalidToken(
                "the bearer token is unknown or revoked; "
                "create one with `python manage.py createapitoken USERNAME`"
            )
        return user


class StaffSession(APIKeyCookie):
    """A logged-in staff member's session (the admin login), CSRF-checked for unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        # CSRF is checked in authenticate, and only for staff sessions, so a request with no
        # credentials at all gets a 401 rather than a CSRF complaint.
        super().__init__(csrf=False)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if key and "\x00" in key:
            # No session key holds NUL, and looking one up makes PostgreSQL raise (a 500).
            return None
        user = getattr(request, "user", None)
        if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
            return None
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise CsrfRequired(
                "CSRF check failed: a session-authenticated request must send the csrftoken "
                "cookie's value in the X-CSRFToken header (or use a bearer token)"
            )
        return user


api_auth = [BearerToken(), StaffSession()]
