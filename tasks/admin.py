from django.contrib import admin, messages

from tasks import audit, permissions
from tasks.auth import ScopeTooNarrow, revoke_tokens
from tasks.models import ApiToken, AuditVia


def admin_actor(request) -> audit.Actor:
    return audit.Actor.of_request(request, AuditVia.ADMIN)


class AuditedAdmin(admin.ModelAdmin):
    """Every add, change and delete the admin makes is also an audit entry: Django's own change
    log (its message says which fields changed) is kept as it is, and the trail carries it."""

    def _audit(self, request, action: str, obj, message: str) -> None:
        is_task = isinstance(obj, Task)
        audit.record(
            admin_actor(request),
            f"{self.opts.model_name}.{action}",
            target=f"{self.opts.verbose_name} {obj}",
            task_ids=[str(obj.pk)] if is_task else (),
            detail={"change": message} if message else None,
        )

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        self._audit(request, "add", obj, entry.get_change_message())
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        self._audit(request, "change", obj, entry.get_change_message())
        return entry

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, "delete", obj, "")
        return super().log_deletions(request, queryset)


class OperatorAdmin(AuditedAdmin):
    """Who may do what here is tasks.permissions' rule, as on the dashboard and the API: reading
    needs the viewer's permission; adding, editing and the actions (``permissions=["operate"]``)
    the operator's. Django's own add/change permissions of the model are not consulted."""

    def has_view_permission(self, request, obj=None) -> bool:
        return permissions.user_may(request.user, permissions.READ)

    def has_add_permission(self, request) -> bool:
        return permissions.user_may(request.user, permissions.OPERATE)

    def has_change_permission(self, request, obj=None) -> bool:
        return permissions.user_may(request.user, permissions.OPERATE)

    def has_operate_permission(self, request) -> bool:
        return permissions.user_may(request.user, permissions.OPERATE)

    def get_form(self, request, obj=None, change=False, **kwargs):
        # The form checks what this user may queue (permissions.submit_refusal).
        form = super().get_form(request, obj, change=change, **kwargs)
        form.user_scope = permissions.user_scope(request.user)
        return form


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Tokens are created with `manage.py createapitoken`; here they are listed and revoked."""

    list_display = (
        "prefix",
        "name",
        "user",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked",
    )
    list_filter = ("revoked", "scope")
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "token_hash", "user", "scope", "created_at", "last_used_at")
    fields = (
        "user",
        "name",
        "prefix",
        "token_hash",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked",
    )
    actions = ("revoke_tokens",)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset) -> None:
        count = revoke_tokens(queryset, admin_actor(request))
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


# ---------------------------------------------------------------------------------------------
# Tasks: every status change goes through tasks.queue; the changelist never counts the table.

import json  # noqa: E402

from django import forms  # noqa: E402
from django.core.paginator import Paginator  # noqa: E402
from django.utils.functional import cached_property  # noqa: E402
from django.utils.html import format_html, format_html_join  # noqa: E402

from tasks import operations, queue, selectors  # noqa: E402
from tasks.ids import InvalidTaskId, TaskIdError, parse_id_prefix  # noqa: E402
from tasks.models import OPERATOR_TRANSITIONS, Status, Task  # noqa: E402
from tasks.validation import InvalidTask, NewTask, validate_task_spec  # noqa: E402

ADMIN_COUNT_CAP = 10_000
# The fields of a new task, as tasks.validation checks them; the params box goes last.
SPEC_FIELDS = (*(name for name in NewTask.model_fields if name != "params"), "params")
# What the queue engine and the dispatchers keep of a task: shown, never edited here.
ENGINE_FIELDS = (
    "attempts",
    "system_failures",
    "locked_by",
    "locked_at",
    "lease_expires_at",
    "cancel_requested",
    "created_at",
    "updated_at",
)
READABLE_FIELDS = ("params_pretty", "result_pretty", "error_pretty", "error_history_pretty")


class CappedCountPaginator(Paginator):
    """Counts at most ADMIN_COUNT_CAP rows (``COUNT(*)`` over a ``LIMIT`` subquery), so a
    changelist over a million tasks costs one page read, not a full scan."""

    @cached_property
    def count(self) -> int:
        return self.object_list[:ADMIN_COUNT_CAP].count()


class TaskAdminForm(forms.ModelForm):
    user_scope: str | None = None  # set by OperatorAdmin.get_form

    class Meta:
        model = Task
        fields = (*SPEC_FIELDS, "status")

        widgets = {
            "type": forms.TextInput(attrs={"size": 40}),
            "domain": forms.TextInput(attrs={"size": 40}),
            "unique_key": forms.TextInput(attrs={"size": 40}),
            "description": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "params": forms.Textarea(attrs={"rows": 4, "cols": 80}),
        }

    def clean(self) -> dict:
        """Apply the API's rules (tasks.validation) to a new task, or to the fields changed."""
        cleaned = super().clean()
        adding = self.instance._state.adding
        values = {name: cleaned[name] for name in SPEC_FIELDS if name in cleaned}
        if values.get("params") is None:
            values["params"] = {}  # an empty box: no params
        try:
            self.task_spec = validate_task_spec(values)
        except InvalidTask as exc:
            for field, message in exc.errors.items():
                if field in values and (adding or field in self.changed_data):
                    self.add_error(field, message)
        task_type = values.get("type")
        if task_type and (adding or "type" in self.changed_data):
            refusal = permissions.submit_refusal(self.user_scope, task_type)
            if refusal:
                self.add_error("type", refusal)
        return cleaned

    def clean_unique_key(self) -> str | None:
        # An empty box is no key (a key of "" is refused, as in the API).
        key = self.cleaned_data.get("unique_key")
        if key in (None, ""):
            return None
        holder = selectors.unfinished_holder(key) if self.instance._state.adding else None
        if holder is not None:
            raise forms.ValidationError(
                f"Unfinished task {holder['id']} ({holder['status']}) already holds this key; "
                "open that task, or cancel it first to queue a new one."
            )
        return key

    def clean_status(self) -> str:
        new = self.cleaned_data["status"]
        if self.instance._state.adding:
            return Status.QUEUED
        old = self.initial.get("status")
        if new == old:
            return new
        allowed_from = OPERATOR_TRANSITIONS.get(new)
        if allowed_from is None:
            raise forms.ValidationError(
                f"Status can only be set to {' or '.join(OPERATOR_TRANSITIONS)}, not {new}; "
                "the dispatchers set the others."
            )
        if old not in allowed_from:
            action = "run" if new == Status.QUEUED else "cancel"
            raise forms.ValidationError(f"A {old} task cannot be {action}: choose another status.")
        return new


@admin.register(Task)
class TaskAdmin(OperatorAdmin):  # editing a task's status is run now or cancel
    # Deleting stays Django's tasks.delete_task, which no SeedCore group grants: a task's
    # history is kept until retention prunes it.
    form = TaskAdminForm

    class Media:
        css = {"all": ["tasks/admin.css"]}

    list_display = (
        "short_id",
        "type",
        "domain",
        "unique_key",
        "status",
        "attempts",
        "run_after",
        "updated_at",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "created_at", "updated_at")
    search_fields = ("=type", "=domain", "=unique_key", "description")
    search_help_text = (
        "An ID prefix (4+ hex digits) finds tasks by ID; other words match the type, domain "
        "or unique key exactly, or appear in the description."
    )
    ordering = ("-created_at", "-id")
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ("run_now_action", "cancel_action")
    readonly_fields = ("id", *ENGINE_FIELDS, *READABLE_FIELDS)
    fieldsets = (
        (None, {"fields": ("id", "type", "status", "description", "domain", "unique_key")}),
        ("Scheduling", {"fields": ("priority", "max_attempts", "run_after", *ENGINE_FIELDS)}),
        ("Data", {"fields": ("params", *READABLE_FIELDS)}),
    )

    def get_readonly_fields(self, request, obj=None):
        # A key is chosen when the task is queued; changing it later could take another
        # unfinished task's key.
        if obj is None:
            return self.readonly_fields
        return (*self.readonly_fields, "unique_key")

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": SPEC_FIELDS}),)
        return self.fieldsets

    @admin.display(description="ID", ordering="id")
    def short_id(self, obj: Task) -> str:
        return obj.short_id

    @staticmethod
    def _pre(value) -> str:
        if value in (None, "", [], {}):
            return "—"
        text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
        return format_html('<pre class="seedcore-pre">{}</pre>', text)

    @admin.display(description="Params (readable)")
    def params_pretty(self, obj: Task) -> str:
        return self._pre(obj.params)

    @admin.display(description="Result")
    def result_pretty(self, obj: Task) -> str:
        return self._pre(obj.result)

    @admin.display(description="Error")
    def error_pretty(self, obj: Task) -> str:
        return self._pre(obj.error)

    @admin.display(description="Failed attempts")
    def error_history_pretty(self, obj: Task) -> str:
        attempts = [entry for entry in obj.error_history or [] if isinstance(entry, dict)]
        if not attempts:
            return "—"
        return format_html_join(
            "",
            '<p class="seedcore-attempt"><b>Attempt {}</b> · {} · {} · {}</p>'
            '<pre class="seedcore-pre">{}\n\n{}</pre>',
            (
                (
                    entry.get("attempt", "?"),
                    entry.get("outcome", ""),
                    entry.get("at", ""),
                    entry.get("dispatcher", ""),
                    entry.get("error", ""),
                    entry.get("traceback", ""),
                )
                for entry in attempts
            ),
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        try:
            id_range = parse_id_prefix(term)
        except InvalidTaskId:
            return super().get_search_results(request, queryset, search_term)
        # A hex word is an ID prefix: a primary-key range, never a scan of a million UUIDs.
        return queryset.filter(id__gte=id_range.low, id__lte=id_range.high), False

    def save_model(self, request, obj: Task, form, change: bool) -> None:
        if not change:
            submitted = queue.submit(**form.task_spec)
            obj.pk = obj.id = submitted.task["id"]
            if not submitted.created:  # another add took the key since the form was checked
                self.message_user(
                    request,
                    f"Not queued: unfinished task {obj.pk} already holds unique key "
                    f"{submitted.task['unique_key']!r}; this is that task.",
                    messages.WARNING,
                )
            return
        other_fields = [name for name in form.changed_data if name != "status"]
        if other_fields:
            obj.save(update_fields=other_fields)
        if "status" in form.changed_data:
            self._transition(request, str(obj.pk), form.cleaned_data["status"])

    def _transition(self, request, task_id: str, status: str) -> bool:
        try:
            if status == Status.QUEUED:
                operations.run_now(task_id, admin_actor(request))
            else:
                operations.cancel(task_id, admin_actor(request))
        except (queue.TransitionNotAllowed, TaskIdError, ScopeTooNarrow) as exc:
            self.message_user(request, f"Status not changed: {exc}", messages.ERROR)
            return False
        return True

    def _each(self, request, queryset, call, verb: str) -> None:
        ids = [str(task_id) for task_id in queryset.values_list("id", flat=True)]
        outcome = call(ids, admin_actor(request))
        refused = list(outcome.refused.values())
        if outcome.done:
            self.message_user(request, f"{verb} {len(outcome.done)} task(s).", messages.SUCCESS)
        for why in refused[:10]:
            self.message_user(request, f"Refused: {why}", messages.ERROR)
        if len(refused) > 10:
            self.message_user(request, f"… and {len(refused) - 10} more refused.", messages.ERROR)

    @admin.action(description="Run now", permissions=["operate"])
    def run_now_action(self, request, queryset) -> None:
        self._each(request, queryset, operations.run_now_many, "Queued")

    @admin.action(description="Cancel", permissions=["operate"])
    def cancel_action(self, request, queryset) -> None:
        self._each(request, queryset, operations.cancel_many, "Cancelled")


# ---------------------------------------------------------------------------------------------
# Queue controls: pause and concurrency limits, changed through tasks.queue like everywhere else

from tasks.models import ALL_TYPES, QueueControl  # noqa: E402
from tasks.validation import validate_concurrency_limit, validate_queue_type  # noqa: E402


class QueueControlForm(forms.ModelForm):
    class Meta:
        model = QueueControl
        fields = ("type", "paused", "concurrency_limit")
        widgets = {"type": forms.TextInput(attrs={"maxlength": 200})}
        help_texts = {
            "type": "A task type (it need not have tasks yet).",
            "concurrency_limit": "How many may run at once; blank: the handler's own limit.",
        }

    def clean_type(self) -> str:
        try:
            return validate_queue_type(self.cleaned_data.get("type", ""))
        except InvalidTask as exc:
            raise forms.ValidationError(exc.errors["type"]) from None

    def clean_concurrency_limit(self) -> int | None:
        try:
            return validate_concurrency_limit(self.cleaned_data.get("concurrency_limit"))
        except InvalidTask as exc:
            raise forms.ValidationError(exc.errors["limit"]) from None


@admin.register(QueueControl)
class QueueControlAdmin(OperatorAdmin):
    """Pause a type and override its concurrency limit. Saving calls tasks.queue.pause,
    resume and set_concurrency_limit, so dispatchers wake on a resume as from the API. Pausing
    every type is the dashboard's, the API's and the CLI's (its row has a blank key, which
    admin URLs cannot address)."""

    form = QueueControlForm
    list_display = ("__str__", "paused", "paused_at", "concurrency_limit", "declared_concurrency")
    list_filter = ("paused",)
    readonly_fields = ("paused_at", "declared_concurrency")

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(type=ALL_TYPES)

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "type") if obj is not None else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # resume and clear the limit instead; a declared limit comes from code

    def save_model(self, request, obj, form, change) -> None:
        actor = admin_actor(request)
        if not change or "concurrency_limit" in form.changed_data:
            operations.set_concurrency_limit(obj.type, obj.concurrency_limit, actor)
        if not change or "paused" in form.changed_data:
            if obj.paused:
                operations.pause_queue(obj.type, actor)
            else:
                operations.resume_queue(obj.type, actor)


# Schedules have an admin module of their own.
from tasks import schedule_admin  # noqa: E402, F401
