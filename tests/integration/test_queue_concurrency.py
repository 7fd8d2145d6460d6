"""Several OS processes claiming at once: every task is claimed exactly once, none is lost.

The children are spawned and import this module before Django is set up, so it imports
nothing from the project at module level.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as stdlib_queue
import time

import pytest

TASKS = 3000
BATCHES = (1, 7, 25, 50)


def _claim_until_empty(database_url: str, name: str, batch: int, start, results) -> None:
    """A child process: claim and complete until the queue stays empty, report what it got."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "seedcore_site.test_settings"
    import django

    django.setup()
    from tasks import queue

    claimed: list[tuple[str, int]] = []
    stale = 0
    empty = 0
    start.wait(timeout=60)
    while empty < 3:
        rows = queue.claim(dispatcher=name, batch=batch)
        if not rows:
            empty += 1
            continue
        empty = 0
        claimed += [(row["id"], row["attempts"]) for row in rows]
        time.sleep(0.001)  # a moment of "work", so the workers interleave even on a busy machine
        done = queue.complete_many(
            dispatcher=name, results=[(row["id"], row["attempts"], name) for row in rows]
        )
        stale += len(rows) - len(done)
    results.put((name, claimed, stale))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_take_every_task_exactly_once(test_database_url):
    from tasks import queue
    from tasks.models import Task

    ids = queue.enqueue_many([{"type": "noop"} for _ in range(TASKS)])
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(BATCHES))
    results = context.Queue()
    workers = [
        context.Process(
            target=_claim_until_empty,
            args=(test_database_url, f"worker-{n}", batch, start, results),
        )
        for n, batch in enumerate(BATCHES)
    ]
    for worker in workers:
        worker.start()
    reports = []
    deadline = time.monotonic() + 240
    while len(reports) < len(workers):
        try:
            reports.append(results.get(timeout=1))
        except stdlib_queue.Empty:
            crashed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            assert not crashed, f"a worker crashed (exit codes {crashed})"
            assert time.monotonic() < deadline, "workers took more than 240 s"
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    claims = [task_id for _, claimed, _ in reports for task_id, _ in claimed]
    assert len(claims) == TASKS, "a task was claimed twice or lost"
    assert set(claims) == set(ids)
    assert {attempt for _, claimed, _ in reports for _, attempt in claimed} == {1}
    assert sum(stale for _, _, stale in reports) == 0
    assert sum(1 for _, claimed, _ in reports if claimed) >= 2, "the workers never overlapped"
    assert Task.objects.exclude(status="COMPLETED").count() == 0
    owners = dict(Task.objects.values_list("id", "result"))
    by_worker = {task_id: name for name, claimed, _ in reports for task_id, _ in claimed}
    assert {str(task_id): name for task_id, name in owners.items()} == by_worker
