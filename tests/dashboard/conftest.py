"""Helpers for the dashboard tests: tasks driven to a status through the real queue engine,
and what a live tasks frame tells a page."""

from __future__ import annotations

import html
import json
import re

import pytest

from dashboard.live import Batch
from tasks import queue, selectors

# Helpers claim their own task at once, ahead of any QUEUED one a test made before.
CLAIM_FIRST = 1_000_000


def failed_task(type: str = "echo", *, error: str = "boom", **spec) -> dict:
    """A task that ran once and failed for good, with a traceback in its history."""
    task = queue.enqueue(type=type, priority=CLAIM_FIRST, **spec)
    claimed = queue.claim(dispatcher="test-dispatcher", batch=1)
    assert [row["id"] for row in claimed] == [task["id"]]
    queue.fail(
        task_id=task["id"],
        dispatcher="test-dispatcher",
        attempt=1,
        error=error,
        traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: boom',
        permanent=True,
    )
    return selectors.get_task(task["id"])


def completed_task(type: str = "echo", *, result=None, **spec) -> dict:
    task = queue.enqueue(type=type, priority=CLAIM_FIRST, **spec)
    (claimed,) = queue.claim(dispatcher="test-dispatcher", batch=1)
    assert claimed["id"] == task["id"]
    queue.complete(
        task_id=claimed["id"], dispatcher="test-dispatcher", attempt=1, result=result or {}
    )
    return selectors.get_task(task["id"])


@pytest.fixture
def organism_admin_client(client, make_user):
    """Signed in as a member of the widest group, who may do everything (and is not staff)."""
    client.force_login(make_user("organism-admin", "organism admin"))
    return client


def told(frame: str) -> Batch:
    """What a ``live-tasks`` websocket frame tells a page: statuses, overflow, total."""
    assert 'id="live-tasks"' in frame, frame[:200]
    statuses = re.search(r'data-statuses="([^"]*)"', frame).group(1)
    return Batch(
        json.loads(html.unescape(statuses)),
        'data-overflow="1"' in frame,
        int(re.search(r'data-total="(\d+)"', frame).group(1)),
    )
