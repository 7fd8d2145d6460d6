"""First-start conveniences for the embedded mode."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model


def ensure_admin_user() -> tuple[str, str] | None:
    """Create a superuser when the database has none; returns (username, password) if created.

    DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD choose them; otherwise the
    username is ``admin`` and the password is generated.
    """
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return None
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
    password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    return username, password
