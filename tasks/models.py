"""The tasks table, the dispatchers' heartbeat table and the API's tokens.

Defaults live in the database (``db_default``) so a row inserted by plain SQL with just a
``type`` is valid, QUEUED and claimable. ``updated_at`` is stamped by a trigger (migration
0002), and every insert and status change is announced by NOTIFY (also 0002).
Which status changes are allowed is declared next to ``Status``; they are made through
``tasks.queue`` only.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class RandomUUID(models.Func):
    """A database-side UUID default: PostgreSQL's gen_random_uuid()."""

    template = "gen_random_uuid()"
    output_field = models.UUIDField()


class Status(models.TextChoices):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRY = "RETRY"
    CANCELLED = "CANCELLED"


# What each status allows, declared once: tasks.queue builds its statements' status lists from
# these, and the admin, the dashboard, the API and the CLI ask them rather than list statuses.

# How statuses are shown: a task's life, from waiting through running to its end.
STATUS_ORDER = (
    Status.QUEUED,
    Status.RUNNING,
    Status.RETRY,
    Status.COMPLETED,
    Status.FAILED,
    Status.CANCELLED,
)
# A dispatcher claims these (once ``run_after`` has passed); the claim makes them RUNNING, and a
# RUNNING attempt ends COMPLETED, RETRY, FAILED or CANCELLED through the queue's fenced writes.
CLAIMABLE_STATUSES = (Status.QUEUED, Status.RETRY)
FINISHED_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
# The operator's two actions and the statuses each accepts. Run now (retry) queues the task at
# once with a fresh set of attempts. Cancel ends QUEUED and RETRY tasks CANCELLED at once; a
# RUNNING one is asked to stop and ends CANCELLED when its attempt does.
RUNNABLE_NOW_STATUSES = (Status.FAILED, Status.CANCELLED, Status.RETRY, Status.QUEUED)
CANCELLABLE_STATUSES = (Status.QUEUED, Status.RETRY, Status.RUNNING)
# While a task is in one of these, no other task may take its ``unique_key`` (a partial unique
# index; tasks.queue turns the conflicts into answers).
UNFINISHED_STATUSES = (Status.QUEUED, Status.RETRY, Status.RUNNING)
# The statuses an operator may set by hand (the admin's status field): each is the target of one
# action, reached from the statuses listed. Cancelling a CANCELLED task changes nothing.
OPERATOR_TRANSITIONS = {
    Status.QUEUED: RUNNABLE_NOW_STATUSES,
    Status.CANCELLED: (*CANCELLABLE_STATUSES, Status.CANCELLED),
}


def can_run_now(status: str) -> bool:
    return status in RUNNABLE_NOW_STATUSES


def can_cancel(status: str, *, cancel_requested: bool = False) -> bool:
    """Whether a cancel would change anything (a RUNNING task asked once already would not)."""
    return status in CANCELLABLE_STATUSES and not cancel_requested


class Task(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    status = models.TextField(choices=Status.choices, default=Status.QUEUED, db_default="QUEUED")
    # The attempt number of the latest claim; also the fencing token of that attempt.
    attempts = models.IntegerField(default=0, db_default=0)
    # Per-task cap on attempts; NULL means the handler's or SEEDCORE_MAX_ATTEMPTS.
    max_attempts = models.IntegerField(null=True, blank=True)
    # Higher runs first; ties run oldest first.
    priority = models.IntegerField(default=0, db_default=0)
    locked_by = models.TextField(null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    # When a RUNNING task's lease runs out unless its dispatcher renews it.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    run_after = models.DateTimeField(null=True, blank=True)
    # Set by a cancel of a RUNNING task; the attempt then ends CANCELLED, whatever it returns.
    cancel_requested = models.BooleanField(default=False, db_default=False)
    type = models.TextField()
    description = models.TextField(null=True, blank=True)
    domain = models.TextField(null=True, blank=True)
    drift_score = models.FloatField(default=0.0, db_default=0.0)
    # At most one unfinished task holds a key (tasks_unique_key_unfinished): submitting a held
    # key returns the holder instead of a second task. NULL: no such rule.
    unique_key = models.TextField(
        null=True,
        blank=True,
        help_text="While an unfinished task holds this key, no second task is queued with it.",
    )
    params = models.JSONField(default=dict, db_default={}, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    # One entry per failed attempt: attempt, error, traceback, dispatcher, at.
    error_history = models.JSONField(default=list, db_default=[], blank=True)
    # One entry per attempt an agent reported (tasks.queue appends it with the attempt's
    # outcome): attempt, node_id, node_ip, pid, actor_id, organ_id, started_at, finished_at,
    # outcome, log. The newest RUNS_MAX_ENTRIES are kept.
    runs = models.JSONField(default=list, db_default=[], blank=True)
    # Attempts Ray lost (SYSTEM failures: an agent, a node, a worker or an object lost). They
    # are retried at once and do not count against max_attempts: the attempts budget used is
    # attempts - system_failures. SEEDCORE_MAX_SYSTEM_RETRIES caps them.
    system_failures = models.IntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "tasks"
        ordering = ["-created_at", "-id"]
        # The operator's permission (tasks.permissions): submit, run now, cancel, bulk actions.
        permissions = [("operate_task", "Can operate tasks (submit, run now, cancel)")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=Status.values), name="tasks_status_valid"
            ),
            models.CheckConstraint(condition=Q(attempts__gte=0), name="tasks_attempts_nonnegative"),
            # Enforced by PostgreSQL, so concurrent submits (or plain INSERTs) make one task.
            # tasks.queue's ON CONFLICT clauses repeat this condition to pick this index.
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=Q(unique_key__isnull=False, status__in=UNFINISHED_STATUSES),
                name="tasks_unique_key_unfinished",
            ),
        ]
        indexes = [
            # The claim query reads only claimable rows, in claim order.
            models.Index(
                models.F("priority").desc(),
                "created_at",
                name="tasks_claimable_idx",
                condition=Q(status__in=CLAIMABLE_STATUSES),
            ),
            # The reaper reads only RUNNING rows whose lease ran out.
            models.Index(
                fields=["lease_expires_at"],
                name="tasks_running_lease_idx",
                condition=Q(status=Status.RUNNING),
            ),
            # Per-status counts, filtered listings newest first, and pruning.
            models.Index(fields=["status", "created_at", "id"], name="tasks_status_created_idx"),
            models.Index(fields=["created_at", "id"], name="tasks_created_idx"),
            # The overview's last-hour figures (dashboard.metrics) and the admin's date filter.
            models.Index(fields=["updated_at"], name="tasks_updated_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {str(self.id)[:8]} {self.status}"

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]


class Dispatcher(models.Model):
    """A dispatcher's heartbeat: the reaper and the dashboard read it."""

    name = models.TextField(primary_key=True)
    node = models.TextField(default="", db_default="")
    pid = models.IntegerField(default=0, db_default=0)
    started_at = models.DateTimeField(db_default=Now())
    last_beat_at = models.DateTimeField(db_default=Now())
    in_flight = models.IntegerField(default=0, db_default=0)
    processed = models.BigIntegerField(default=0, db_default=0)
    # Cumulative counters, histogram buckets and circuit state, written with each heartbeat
    # (organism.metrics reads them, summed across dispatchers, for /metrics).
    stats = models.JSONField(default=dict, db_default={}, blank=True)

    class Meta:
        db_table = "dispatchers"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MetricTotal(models.Model):
    """Counters that outlive their writer: a forgotten dispatcher's stats are folded in here
    (so /metrics totals never go backwards) and the supervisor adds its reaped count."""

    name = models.TextField(primary_key=True)
    stats = models.JSONField(default=dict, db_default={})

    class Meta:
        db_table = "metric_totals"

    def __str__(self) -> str:
        return self.name


class IdempotencyKey(models.Model):
    """A caller's ``Idempotency-Key`` on ``POST /tasks`` and the task it made, kept for
    ``tasks.idempotency.WINDOW`` so a retried request gets that task back (tasks.idempotency)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.TextField()
    # SHA-256 of the request body as validated, so a different request with the same key is
    # refused rather than answered with the wrong task.
    request_hash = models.CharField(max_length=64)
    # No foreign key: retention deletes tasks with plain SQL, and a key whose task is gone is
    # free again (tasks.idempotency).
    task_id = models.UUIDField()
    created_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_keys_user_key")
        ]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_keys_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.key} → {self.task_id}"


class ApiToken(models.Model):
    """A bearer token for the HTTP API. Only its SHA-256 is stored; the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.TextField(blank=True, default="")
    # The token's first characters, kept in clear so an operator can tell tokens apart.
    prefix = models.CharField(max_length=12)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    # What the token may do at most (tasks.permissions); its owner's current power caps it.
    scope = models.CharField(
        max_length=8,
        choices=[("read", "read"), ("operate", "operate"), ("admin", "admin")],
        default="read",
    )
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_tokens"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        label = f" ({self.name})" if self.name else ""
        return f"{self.prefix}…{label}"


class AuditVia(models.TextChoices):
    """Where an operator action came from."""

    DASHBOARD = "dashboard", "dashboard"
    ADMIN = "admin", "admin"
    API = "api", "API"
    CLI = "cli", "CLI"


class AuditEntry(models.Model):
    """One operator action: who did what, to what, when and from where (``tasks.audit``).

    ``task_id`` is a plain column, not a foreign key: the trail outlives the tasks it names
    (retention prunes tasks long before it prunes their audit).
    """

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(db_default=Now())
    actor = models.TextField()
    via = models.TextField(choices=AuditVia.choices)
    address = models.GenericIPAddressField(null=True, blank=True)
    action = models.TextField()
    target = models.TextField(default="", db_default="", blank=True)
    task_id = models.UUIDField(null=True, blank=True)
    detail = models.JSONField(default=dict, db_default={}, blank=True)

    class Meta:
        db_table = "audit_log"
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["task_id", "-id"], name="audit_log_task_idx"),
            models.Index(fields=["at"], name="audit_log_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} ({self.via}) {self.action} {self.target}"


class CatchUp(models.TextChoices):
    """What a schedule does with the runs it missed while nothing was running."""

    SKIP = "skip", "skip missed runs"
    ONCE = "once", "run missed runs once"


class Schedule(models.Model):
    """A periodic task: every slot of ``cron`` (in ``timezone``) or of ``interval_seconds``,
    ``rundispatcher``'s supervisor enqueues one task of ``type`` with ``params``.

    The rules (validation, slots, catch-up, exactly-once enqueueing) are ``tasks.schedules``;
    ``next_run_at``, ``last_run_at`` and ``last_task`` are kept by it and only shown elsewhere.
    """

    name = models.TextField(unique=True)
    type = models.TextField()
    params = models.JSONField(default=dict, blank=True)
    # Exactly one of the two (a CHECK below; tasks.schedules says which field is wrong).
    cron = models.TextField(blank=True, default="", help_text="e.g. 30 2 * * * (minute hour …)")
    interval_seconds = models.IntegerField(
        null=True, blank=True, help_text="or run every N seconds (aligned to the Unix epoch)"
    )
    timezone = models.TextField(default="UTC", help_text="an IANA name, e.g. Europe/Berlin")
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=0)
    catch_up = models.TextField(
        choices=CatchUp.choices,
        default=CatchUp.SKIP,
        help_text="runs missed while nothing ran: none, or one task for all",
    )
    # NULL while paused.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    # No Django-level constraint: pruning deletes tasks by SQL, and the database's own foreign
    # key (migration 0007) then clears this column (ON DELETE SET NULL).
    last_task = models.ForeignKey(
        Task,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "schedules"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__gte=1))
                | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="schedules_cron_xor_interval",
            ),
            models.CheckConstraint(
                condition=Q(catch_up__in=CatchUp.values), name="schedules_catch_up_valid"
            ),
        ]
        indexes = [
            # The supervisor's "what is due" and "when is the next one" read only enabled rows.
            models.Index(
                fields=["next_run_at"], name="schedules_due_idx", condition=Q(enabled=True)
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from tasks import schedules

        schedules.check_model(self)


class ScheduleRun(models.Model):
    """One task a schedule enqueued: for the slot it was due at, or (``slot`` NULL) by Run now.

    The unique (schedule, slot) key is what makes a slot run at most once, whichever
    supervisor gets there. The database's foreign keys (migration 0007) delete a run with its
    task when the task is pruned, and with its schedule.
    """

    schedule = models.ForeignKey(
        Schedule, on_delete=models.DO_NOTHING, db_constraint=False, related_name="runs"
    )
    slot = models.DateTimeField(null=True, blank=True)
    task = models.ForeignKey(
        Task, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "schedule_runs"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot"], name="schedule_runs_one_per_slot")
        ]
        indexes = [
            models.Index(fields=["schedule", "-created_at"], name="schedule_runs_recent_idx")
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} {self.slot or 'run now'}"


class BulkAction(models.Model):
    """An operator action over every task a filter matched when it was confirmed (tasks.bulk).

    The row is the action's durable progress: the batches advance ``cursor_created_at`` and
    ``cursor_id`` with ``done`` and ``skipped`` in the same transaction as their writes, so an
    interrupted action resumes where it stopped.
    """

    class State(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    ACTIONS = ("cancel", "retry")

    action = models.TextField(choices=[(action, action) for action in ACTIONS])
    # tasks.selectors.TaskFilter.describe()
    filter = models.JSONField(default=dict)
    # Only tasks created at or before this (the moment of confirmation) are touched.
    snapshot_at = models.DateTimeField()
    total = models.IntegerField(default=0)
    done = models.IntegerField(default=0)
    # Matched at confirmation but refused: their status no longer allowed the action.
    skipped = models.IntegerField(default=0)
    state = models.TextField(choices=State.choices, default=State.RUNNING)
    error = models.TextField(blank=True, default="")
    # The last task handled, in (created_at, id) order; null before the first batch.
    cursor_created_at = models.DateTimeField(null=True, blank=True)
    cursor_id = models.UUIDField(null=True, blank=True)
    requested_by = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    # Stamped by every batch: a RUNNING action whose stamp is old was interrupted.
    updated_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "bulk_actions"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=("cancel", "retry")), name="bulk_actions_action_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} #{self.pk} {self.state}"


# The QueueControl row whose pause stops claiming of every type (no task type is blank).
ALL_TYPES = ""


class QueueControl(models.Model):
    """An operator's controls over claiming one task type (or, for ``ALL_TYPES``, all of them):
    paused or not, and a cap on how many run at once. Written by ``tasks.queue`` only; the
    claim statements read it, so every dispatcher honours it on its next claim."""

    type = models.TextField(primary_key=True, blank=True)
    paused = models.BooleanField(default=False, db_default=False)
    paused_at = models.DateTimeField(null=True, blank=True)
    # The operator's cap (API, admin), which wins over the one the handler declares in code
    # (``@handler(..., concurrency=N)``, written by rundispatcher at start). NULL: no cap.
    concurrency_limit = models.IntegerField(null=True, blank=True)
    declared_concurrency = models.IntegerField(null=True, blank=True)
    # Set by rundispatcher while no agent could take the type's tasks (its organ has no agent
    # placed on a node: scaled to 0, or waiting for resources): what is missing, in a sentence.
    # The claim skips the type meanwhile, so its tasks stay QUEUED with attempts unchanged.
    waiting_for = models.TextField(null=True, blank=True)
    # Set by rundispatcher while every organ the type's tasks go to is at its max_agents with
    # every agent busy (its tasks_per_agent running on each): a sentence saying so. Only what a
    # waiting task says; the claim does not read it.
    organ_full = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "queue_controls"
        ordering = ["type"]
        constraints = [
            models.CheckConstraint(
                condition=Q(concurrency_limit__isnull=True) | Q(concurrency_limit__gte=1),
                name="queue_controls_limit_positive",
            ),
            models.CheckConstraint(
                condition=Q(declared_concurrency__isnull=True) | Q(declared_concurrency__gte=1),
                name="queue_controls_declared_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.type or "all types"

    @property
    def effective_limit(self) -> int | None:
        """The cap that holds: the operator's, else the one declared in code."""
        if self.concurrency_limit is not None:
            return self.concurrency_limit
        return self.declared_concurrency
