"""The admin of schedules (``/admin/tasks/schedule/``): edited here, checked and kept by
``tasks.schedules``; the supervisor's bookkeeping (next and last run, last task) is shown only."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html
from django.utils.timezone import localtime

from tasks import audit, operations, permissions, schedules
from tasks.admin import OperatorAdmin, admin_actor
from tasks.auth import ScopeTooNarrow
from tasks.models import Schedule

# A change to any of these moves the next run to the new timing's first slot after now.
TIMING_FIELDS = {"cron", "interval_seconds", "timezone", "enabled"}


def _when(moment) -> str:
    return localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


class ScheduleAdminForm(forms.ModelForm):
    user_scope: str | None = None  # set by OperatorAdmin.get_form

    class Meta:
        model = Schedule
        fields = (
            "name",
            "type",
            "params",
            "priority",
            "cron",
            "interval_seconds",
            "timezone",
            "catch_up",
            "enabled",
        )
        widgets = {
            "name": forms.TextInput(attrs={"size": 40}),
            "type": forms.TextInput(attrs={"size": 40}),
            "cron": forms.TextInput(attrs={"size": 30}),
            "timezone": forms.TextInput(attrs={"size": 30}),
            "params": forms.Textarea(attrs={"rows": 4, "cols": 80}),
        }

    def clean_type(self) -> str:
        # A schedule of a control type would be organism control by the clock.
        task_type = self.cleaned_data["type"]
        if "type" in self.changed_data:
            refusal = permissions.submit_refusal(self.user_scope, task_type)
            if refusal:
                raise forms.ValidationError(refusal)
        return task_type

    def clean_params(self):
        # An empty box means no params, as for a task.
        params = self.cleaned_data.get("params")
        return {} if params is None else params


@admin.register(Schedule)
class ScheduleAdmin(OperatorAdmin):  # adds, changes and deletes join the audit trail
    form = ScheduleAdminForm
    list_display = ("name", "type", "timing", "enabled", "next_run", "last_run", "last_task_link")
    list_filter = ("enabled", "catch_up")
    search_fields = ("name", "=type")
    readonly_fields = ("next_run_at", "last_run_at", "last_task_link", "created_at")
    fieldsets = (
        (None, {"fields": ("name", "type", "params", "priority", "enabled")}),
        (
            "When",
            {
                "fields": ("cron", "interval_seconds", "timezone", "catch_up"),
                "description": "A cron expression (in the timezone) or an interval, not both.",
            },
        ),
        ("Runs", {"fields": ("next_run_at", "last_run_at", "last_task_link", "created_at")}),
    )
    actions = ("run_now_action", "pause_action", "resume_action")

    def has_delete_permission(self, request, obj=None) -> bool:
        return permissions.user_may(request.user, permissions.OPERATE)  # schedules are theirs

    @admin.display(description="When")
    def timing(self, obj: Schedule) -> str:
        return obj.cron or f"every {obj.interval_seconds} s"

    # With seconds: a schedule may run every second.
    @admin.display(description="Next run", ordering="next_run_at")
    def next_run(self, obj: Schedule) -> str:
        return _when(obj.next_run_at) if obj.enabled else "paused"

    @admin.display(description="Last run", ordering="last_run_at")
    def last_run(self, obj: Schedule) -> str:
        return _when(obj.last_run_at)

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing has run yet: no Runs section
            return self.fieldsets[:2]
        return self.fieldsets

    @admin.display(description="Last task")
    def last_task_link(self, obj: Schedule) -> str:
        if obj.last_task_id is None:
            return "—"
        url = reverse("admin:tasks_task_change", args=[obj.last_task_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.last_task_id)[:8])

    def save_model(self, request, obj: Schedule, form, change: bool) -> None:
        schedules.save(
            obj, timing_changed=not change or bool(TIMING_FIELDS & set(form.changed_data))
        )

    def _each(
        self, request, queryset, action: Callable[[int, audit.Actor], object], verb: str
    ) -> None:
        done = 0
        for schedule_id in queryset.values_list("pk", flat=True):
            try:
                action(schedule_id, admin_actor(request))
                done += 1
            except (schedules.ScheduleNotFound, ScopeTooNarrow) as exc:
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, f"{verb} {done} schedule(s).", messages.SUCCESS)

    @admin.action(description="Run now", permissions=["operate"])
    def run_now_action(self, request, queryset) -> None:
        self._each(request, queryset, operations.run_schedule_now, "Queued a task for")

    @admin.action(description="Pause", permissions=["operate"])
    def pause_action(self, request, queryset) -> None:
        self._each(request, queryset, operations.pause_schedule, "Paused")

    @admin.action(description="Resume", permissions=["operate"])
    def resume_action(self, request, queryset) -> None:
        self._each(request, queryset, operations.resume_schedule, "Resumed")
