"""The web process never imports Ray: it reads PostgreSQL only, so it outlives Ray restarts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

# Serves every kind of request the web process answers, then says whether Ray was imported.
WEB_PROCESS = """
import sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
import seedcore_site.asgi  # the ASGI app daphne serves: HTTP and the dashboard's websocket
from tasks import queue

task = queue.enqueue(type="echo")
staff = get_user_model().objects.create_user("web", password="pw", is_staff=True, is_superuser=True)
web = Client()
web.force_login(staff)
paths = [
    "/healthz", "/readyz", "/coordinator/health", "/metrics", "/dashboard/", "/dashboard/tasks/",
    f"/dashboard/tasks/{task['id']}/", "/dashboard/organism/", "/tasks", f"/tasks/{task['id']}",
    "/organism/summary", "/organism/status", "/admin/tasks/task/", "/api/openapi.json",
]
for path in paths:
    code = web.get(path).status_code
    assert code < 500 or path in ("/readyz", "/coordinator/health", "/organism/summary",
                                  "/organism/status"), (path, code)
print("ray imported" if "ray" in sys.modules else "no ray")
"""


def test_serving_every_page_api_and_probe_never_imports_ray(test_database_url):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seedcore_site.test_settings",
        "DATABASE_URL": test_database_url,
    }
    done = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "no ray"
