"""The test override: development defaults, then the one settings module."""

import os

os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECRET_KEY", "seedcore-tests-only")

from seedcore_site.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not ":memory:", so other processes (dispatchers, servers under test) share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-seedcore.sqlite3")}  # noqa: F405
