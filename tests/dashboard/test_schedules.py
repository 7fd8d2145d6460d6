"""The schedules page, its actions, and the Schedule admin, through Django's test client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from tasks import schedules
from tasks.models import Schedule, ScheduleRun, Task

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def every_minute(name: str = "heartbeat", **fields) -> Schedule:
    return schedules.save(
        Schedule(name=name, type="echo", params={"ping": True}, interval_seconds=60, **fields)
    )


def test_the_page_needs_a_staff_login(client):
    assert client.get(reverse("dashboard:schedules")).status_code == 302
    assert (
        client.post(reverse("dashboard:schedule_action", args=[1]), {"action": "run"}).status_code
        == 302
    )
    assert not Task.objects.exists()


def test_the_list_shows_next_and_last_run_and_the_last_task(organism_admin_client):
    schedule = every_minute()
    paused = every_minute("paused one", enabled=False)
    task_id = schedules.run_now(schedule.pk)
    page = organism_admin_client.get(reverse("dashboard:schedules")).content.decode()
    assert "heartbeat" in page and "every 60 s" in page
    assert reverse("dashboard:task", args=[task_id]) in page
    assert reverse("dashboard:schedule", args=[paused.pk]) in page and "paused" in page
    assert 'value="resume"' in page and 'value="pause"' in page and "Run now" in page
    rows = organism_admin_client.get(reverse("dashboard:schedules") + "?partial=rows", **HTMX)
    assert "<html" not in rows.content.decode() and "heartbeat" in rows.content.decode()


def test_run_now_pause_and_resume_from_the_page(organism_admin_client):
    schedule = every_minute()
    url = reverse("dashboard:schedule_action", args=[schedule.pk])
    response = organism_admin_client.post(url, {"action": "run"})
    assert response.status_code == 302
    assert ScheduleRun.objects.filter(schedule=schedule, slot=None).count() == 1

    organism_admin_client.post(url, {"action": "pause", "back": "list"})
    schedule.refresh_from_db()
    assert not schedule.enabled
    organism_admin_client.post(url, {"action": "resume"})
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None

    response = organism_admin_client.post(url, {"action": "explode"}, follow=True)
    assert "action must be" in response.content.decode()
    unknown = reverse("dashboard:schedule_action", args=[10**9])
    assert organism_admin_client.post(unknown, {"action": "run"}).status_code == 404


def test_the_schedule_page_lists_its_runs(organism_admin_client):
    schedule = every_minute()
    Schedule.objects.filter(pk=schedule.pk).update(
        next_run_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    [scheduled] = schedules.enqueue_due()
    manual = schedules.run_now(schedule.pk)
    page = organism_admin_client.get(
        reverse("dashboard:schedule", args=[schedule.pk])
    ).content.decode()
    assert page.count('class="schedule-run"') == 2
    assert scheduled[:8] in page and manual[:8] in page and "run now" in page
    assert organism_admin_client.get(reverse("dashboard:schedule", args=[10**9])).status_code == 404


def admin_form(**overrides):
    values = {
        "name": "nightly",
        "type": "echo",
        "params": '{"a": 1}',
        "priority": "0",
        "cron": "30 2 * * *",
        "interval_seconds": "",
        "timezone": "Europe/Berlin",
        "catch_up": "skip",
        "enabled": "on",
    }
    return {**values, **overrides}


def test_the_admin_creates_a_schedule_starting_at_its_next_slot(admin_client):
    response = admin_client.post(reverse("admin:tasks_schedule_add"), admin_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = Schedule.objects.get(name="nightly")
    assert schedule.next_run_at > datetime.now(UTC)
    changelist = admin_client.get(reverse("admin:tasks_schedule_changelist")).content.decode()
    assert "nightly" in changelist and "30 2 * * *" in changelist


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"cron": "", "interval_seconds": ""}, "cron", "give a cron expression or an interval"),
        ({"interval_seconds": "5"}, "interval_seconds", "not both"),
        ({"cron": "99 * * * *"}, "cron", "not a valid cron expression"),
        ({"timezone": "Atlantis/Capital"}, "timezone", "not a known IANA timezone"),
        ({"params": "[1, 2]"}, "params", "object"),
        ({"type": ""}, "type", "required"),
    ],
)
def test_the_admin_names_the_field_at_fault(admin_client, overrides, field, message):
    response = admin_client.post(reverse("admin:tasks_schedule_add"), admin_form(**overrides))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field]).lower() or message in str(errors[field]), errors
    assert not Schedule.objects.exists()


def test_the_admin_actions_run_pause_and_resume(admin_client):
    schedule = every_minute()
    changelist = reverse("admin:tasks_schedule_changelist")
    for action in ("run_now_action", "pause_action"):
        admin_client.post(changelist, {"action": action, "_selected_action": [schedule.pk]})
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.last_task_id is not None
    admin_client.post(changelist, {"action": "resume_action", "_selected_action": [schedule.pk]})
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None


def test_an_id_no_bigint_holds_is_404_not_an_error(organism_admin_client):
    huge = 2**64
    assert organism_admin_client.get(reverse("dashboard:schedule", args=[huge])).status_code == 404
    action = reverse("dashboard:schedule_action", args=[huge])
    assert organism_admin_client.post(action, {"action": "run"}).status_code == 404
