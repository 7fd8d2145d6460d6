"""Who may use each dashboard view, and what its templates may offer: both ask
:func:`tasks.permissions.user_scope`, the one rule.

A view is guarded with ``@scope_required(READ | OPERATE | ADMIN)``: a visitor who is not signed
in goes to the login page; a signed-in user without the permission gets a 403 page saying which
group would grant it. Templates hide what the user may not do through the flags of
:func:`permission_flags` (``can_operate``, ``can_control``); the server refuses it anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from tasks import permissions

View = Callable[..., HttpResponse]


def scope_required(needed: str) -> Callable[[View], View]:
    """Admit only users whose scope reaches ``needed``; refuse others (login page, or 403)."""
    if needed not in permissions.SCOPES:
        raise ValueError(f"needed must be one of {', '.join(permissions.SCOPES)}, not {needed!r}")

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not permissions.user_may(request.user, needed):
                return forbidden(request, needed)
            return view(request, *args, **kwargs)

        return guarded

    return decorator


def forbidden(request: HttpRequest, needed: str) -> HttpResponse:
    """The 403 page for a signed-in user who lacks ``needed``."""
    context = {
        "needed_group": permissions.SCOPE_GROUPS[needed],
        "message": permissions.missing_scope_message(needed),
    }
    return render(request, "dashboard/forbidden.html", context, status=403)


def permission_flags(request: HttpRequest) -> dict[str, bool]:
    """Template context processor: what the signed-in user may do, for showing buttons."""
    scope = permissions.user_scope(getattr(request, "user", None))
    return {
        "can_read": permissions.allows(scope, permissions.READ),
        "can_operate": permissions.allows(scope, permissions.OPERATE),
        "can_control": permissions.allows(scope, permissions.ADMIN),
    }
