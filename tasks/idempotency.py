"""``Idempotency-Key`` on ``POST /tasks``: a client that retries a request gets the same task.

The first request with a key makes (or, with a held ``unique_key``, finds) a task and records
(caller, key, request hash, task) in ``idempotency_keys``; for :data:`WINDOW` after it, the same
request with the same key answers that task again, even once it has finished. The key is the
caller's own (it is unique per user), so two callers cannot collide. The same key with a
different request is refused (:class:`KeyConflict`), as Stripe does, rather than answered with a
task that request did not ask for.

A unique index on (user, key) makes concurrent retries one task: each inserts its task and its
key in one transaction, and the second waits on the first's key, finds it, and rolls its own
task back. A key whose window has passed, or whose task retention has deleted, is free again;
:func:`prune_expired` deletes expired keys with each retention round.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from tasks import queue
from tasks.ids import TaskNotFound
from tasks.policy import RetentionPolicy
from tasks.selectors import get_task
from tasks.sql import execute, fetch

WINDOW = timedelta(hours=24)
WINDOW_TEXT = "24 hours"
MAX_KEY_LENGTH = 255
# Printable ASCII: what every HTTP client can send in a header unchanged.
KEY_PATTERN = r"^[ -~]+$"
HEADER = "Idempotency-Key"


class KeyConflict(ValueError):
    """The caller's key cannot answer this request: it was first sent with a different one
    (or, rarer, retention keeps deleting its task as it is read)."""


def request_hash(spec: dict[str, Any]) -> str:
    """A digest of a validated task request: equal for the same fields in any order."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def submit_once(
    *, user_id: int, key: str, spec: dict[str, Any], using: str = DEFAULT_DB_ALIAS
) -> queue.Submitted:
    """Submit ``spec`` (``tasks.queue.submit``'s arguments) unless ``user_id`` already sent
    ``key`` within the window: then answer that task (``created`` False), or raise
    :class:`KeyConflict` if it was sent with a different request."""
    digest = request_hash(spec)
    for _ in range(_ROUNDS):
        with transaction.atomic(using=using):
            submitted = queue.submit(**spec, using=using)
            recorded = fetch(
                _RECORD_SQL,
                [user_id, key, digest, submitted.task["id"], WINDOW.total_seconds()],
                using=using,
            )
            if recorded:
                return submitted
            # The key is live and an earlier task answers it: this one never existed.
            transaction.set_rollback(True, using=using)
        [earlier] = fetch(
            "SELECT id, request_hash, task_id FROM idempotency_keys "
            "WHERE user_id = %s AND key = %s",
            [user_id, key],
            using=using,
        )
        try:
            task = get_task(earlier["task_id"], using=using)
        except TaskNotFound:
            # Retention deleted its task: the key is free again, whatever it was sent with.
            execute(
                "DELETE FROM idempotency_keys WHERE id = %s AND task_id = %s",
                [earlier["id"], earlier["task_id"]],
                using=using,
            )
            continue
        if earlier["request_hash"] != digest:
            raise KeyConflict(
                f"the {HEADER} header {key!r} was first sent with a different request; "
                "send a new key for a new task"
            )
        return queue.Submitted(task, created=False)
    raise KeyConflict(f"the task of {HEADER} {key!r} keeps being deleted; send a new key")


# Rounds of submit-or-read: only a key whose task retention deletes meanwhile takes another.
_ROUNDS = 3

# The key's row, unless a live one exists (a row past its expiry is taken over). A concurrent
# insert of the same key waits here for the other transaction's end. (A test of the task's
# existence cannot go in this WHERE: its subquery would not see a task committed meanwhile.)
_RECORD_SQL = (
    "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id, expires_at) "
    "VALUES (%s, %s, %s, %s, now() + %s * interval '1 second') "
    "ON CONFLICT (user_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
    "task_id = EXCLUDED.task_id, created_at = now(), expires_at = EXCLUDED.expires_at "
    "WHERE idempotency_keys.expires_at <= now() "
    "RETURNING id"
)


def prune_expired(policy: RetentionPolicy, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Delete keys whose window has passed, in the retention policy's short batches; returns
    how many went."""
    deleted = 0
    for _ in range(policy.max_batches):
        n = execute(
            "DELETE FROM idempotency_keys WHERE id IN (SELECT id FROM idempotency_keys "
            "WHERE expires_at <= now() LIMIT %s FOR UPDATE SKIP LOCKED)",
            [policy.batch_size],
            using=using,
        )
        deleted += n
        if n < policy.batch_size:
            break
    return deleted
