"""A Django app of ordinary ``@task`` functions, as a SeedCore user would write them
(installed by ``seedcore_site.test_settings``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

# Written by tests/taskapp/not_a_task.py when anything imports it.
NOT_A_TASK_MARKER = Path(tempfile.gettempdir()) / "seedcore-test-not-a-task-imported"
