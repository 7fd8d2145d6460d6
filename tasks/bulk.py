"""Operator actions over every task a filter matches: "Cancel all matching", "Retry all matching".

One library function starts each (:func:`start`); the dashboard and the API call it. The rules:

- **A snapshot bound at confirmation.** The action touches only tasks created up to the moment
  it was confirmed (``snapshot_at``, on the database's clock), so tasks queued afterwards are
  left alone however long it runs. ``total`` is the count at that moment.
- **The same transitions as one task's.** Each batch is one statement of the queue engine
  (``tasks.queue.apply_to_batch``) using the very status rules and writes of ``queue.cancel``
  and ``queue.run_now``: a RUNNING task asked to cancel gets ``cancel_requested``, and a task
  whose status changed meanwhile to one the action refuses is counted in ``skipped``, unchanged.
- **Bounded batches** of ``SEEDCORE_BULK_BATCH`` tasks in (created_at, id) order, each its own
  short transaction that also advances the action's row (progress and cursor), with a pause of
  ``SEEDCORE_BULK_PAUSE_SECONDS`` between them.
- **Durable progress.** The :class:`~tasks.models.BulkAction` row is the progress. The batches
  run in a thread of the process that accepted the action; if that process dies, the row stays
  ``running`` with an old ``updated_at``, shows as interrupted, and :func:`resume` continues it
  from its cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models.functions import Now
from django.utils import timezone

from tasks import queue, selectors
from tasks.models import BulkAction

log = logging.getLogger("seedcore.bulk")

ACTIONS = BulkAction.ACTIONS
# A running action whose row has not advanced for this long has lost its thread.
STALE_AFTER = timedelta(seconds=30)
# The tests run actions to the end inside start() (pytest's database is not shared with
# threads); everything else runs them in a thread.
run_in_background = True


class BulkActionNotFound(LookupError):
    pass


class NotInterrupted(Exception):
    """Only an interrupted action can be continued."""


def count(
    task_filter: selectors.TaskFilter, *, using: str = DEFAULT_DB_ALIAS
) -> tuple[int, datetime]:
    """How many tasks an action on ``task_filter`` confirmed now would touch, and that moment
    (the snapshot bound to pass to :func:`start`)."""
    snapshot_at = selectors.database_now(using=using)
    total = selectors.count_matching(task_filter, created_until=snapshot_at, using=using)
    return total, snapshot_at


def start(
    action: str,
    task_filter: selectors.TaskFilter,
    *,
    snapshot_at: datetime | None = None,
    requested_by: str = "",
    using: str = DEFAULT_DB_ALIAS,
) -> BulkAction:
    """Start ``action`` (``cancel`` or ``retry``) on every task matching ``task_filter``
    created up to ``snapshot_at`` (the confirmation; now if not given, never later than now).
    Returns the action's row; its batches run in the background."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    now = selectors.database_now(using=using)
    snapshot_at = min(snapshot_at, now) if snapshot_at is not None else now
    bulk = BulkAction.objects.using(using).create(
        action=action,
        filter=task_filter.describe(),
        snapshot_at=snapshot_at,
        total=selectors.count_matching(task_filter, created_until=snapshot_at, using=using),
        requested_by=requested_by,
    )
    _launch(bulk.pk, using)
    return get(bulk.pk, using=using)


def resume(bulk_id: int, *, using: str = DEFAULT_DB_ALIAS) -> BulkAction:
    """Continue an interrupted action from where it stopped. Raises NotInterrupted if it is
    finished or still advancing. (Were two runners ever at one action, each batch locks the
    action's row and starts from its cursor, so no task is counted twice.)"""
    get(bulk_id, using=using)
    claimed = (
        BulkAction.objects.using(using)
        .filter(
            pk=bulk_id,
            state=BulkAction.State.RUNNING,
            updated_at__lt=timezone.now() - STALE_AFTER,
        )
        .update(updated_at=Now())
    )
    if not claimed:
        raise NotInterrupted(f"bulk action {bulk_id} is not interrupted: it is finished or running")
    _launch(bulk_id, using)
    return get(bulk_id, using=using)


def get(bulk_id: int, *, using: str = DEFAULT_DB_ALIAS) -> BulkAction:
    if not 0 < bulk_id < 2**63:  # no such row, and PostgreSQL's bigint would overflow
        raise BulkActionNotFound(f"no bulk action with ID {bulk_id}")
    try:
        return BulkAction.objects.using(using).get(pk=bulk_id)
    except BulkAction.DoesNotExist:
        raise BulkActionNotFound(f"no bulk action with ID {bulk_id}") from None


def run(
    bulk_id: int,
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> BulkAction:
    """Run an action's batches from its cursor until none is left (or ``max_batches``, for
    tests of an interruption). Each batch and the row's progress commit together."""
    batch_size = batch_size or settings.SEEDCORE_BULK_BATCH
    batches = 0
    try:
        while max_batches is None or batches < max_batches:
            if not _run_batch(bulk_id, batch_size, using):
                break
            batches += 1
            time.sleep(settings.SEEDCORE_BULK_PAUSE_SECONDS)
    except Exception as exc:
        BulkAction.objects.using(using).filter(pk=bulk_id).update(
            state=BulkAction.State.FAILED,
            error=str(exc)[:2000],
            finished_at=Now(),
            updated_at=Now(),
        )
        raise
    return get(bulk_id, using=using)


def _run_batch(bulk_id: int, batch_size: int, using: str) -> bool:
    """One batch; False once the action is over."""
    with transaction.atomic(using=using):
        bulk = BulkAction.objects.using(using).select_for_update().get(pk=bulk_id)
        if bulk.state != BulkAction.State.RUNNING:
            return False
        after = None
        if bulk.cursor_created_at is not None:
            after = (bulk.cursor_created_at, str(bulk.cursor_id))
        sql, params = selectors.batch_query(
            selectors.TaskFilter.from_json(bulk.filter),
            created_until=bulk.snapshot_at,
            after=after,
            limit=batch_size,
            using=using,
        )
        batch = queue.apply_to_batch(bulk.action, sql, params, using=using)
        bulk.done += batch["changed"]
        bulk.skipped += batch["picked"] - batch["changed"]
        if batch["picked"]:
            bulk.cursor_created_at, bulk.cursor_id = batch["last_created_at"], batch["last_id"]
        over = batch["picked"] < batch_size
        if over:
            # Tasks counted at confirmation that no longer matched (their status changed
            # meanwhile) were never picked: they are skipped too.
            bulk.skipped = max(bulk.skipped, bulk.total - bulk.done)
            bulk.state = BulkAction.State.FINISHED
            bulk.finished_at = timezone.now()
        bulk.updated_at = timezone.now()
        bulk.save(using=using)
        return not over


def _launch(bulk_id: int, using: str) -> None:
    if not run_in_background:
        run(bulk_id, using=using)
        return
    # The thread reads the row over its own connection: start it once the row is committed.
    thread = threading.Thread(
        target=_run_in_thread, args=(bulk_id, using), name=f"bulk-action-{bulk_id}", daemon=True
    )
    transaction.on_commit(thread.start, using=using)


def _run_in_thread(bulk_id: int, using: str) -> None:
    try:
        run(bulk_id, using=using)
    except Exception:
        log.exception("bulk action %s failed", bulk_id)
    finally:
        connections.close_all()  # this thread's own connections


def progress(bulk: BulkAction) -> dict[str, Any]:
    """An action's progress as plain data (the API's answer, the page's partial)."""
    state = bulk.state
    if state == BulkAction.State.RUNNING and bulk.updated_at < timezone.now() - STALE_AFTER:
        state = "interrupted"
    handled = bulk.done + bulk.skipped
    return {
        "id": bulk.pk,
        "action": bulk.action,
        "filter": bulk.filter,
        "state": state,
        "total": bulk.total,
        "done": bulk.done,
        "skipped": bulk.skipped,
        "percent": 100 if state == "finished" else min(99, handled * 100 // max(bulk.total, 1)),
        "error": bulk.error,
        "requested_by": bulk.requested_by,
        "snapshot_at": bulk.snapshot_at,
        "created_at": bulk.created_at,
        "updated_at": bulk.updated_at,
        "finished_at": bulk.finished_at,
    }
