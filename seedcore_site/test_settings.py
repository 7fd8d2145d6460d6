"""The test override: development defaults, then the one settings module."""

import os

os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECRET_KEY", "seedcore-tests-only")

from seedcore_site.settings import *  # noqa: E402, F403

# A Django app of ordinary @task functions (tests/taskapp), which the Ray actors discover too.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.taskapp"]  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
