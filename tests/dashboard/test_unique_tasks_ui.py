"""Unique keys in the admin and the dashboard: set on add, shown, and conflicts told, not 500s."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks import queue, selectors
from tasks.models import Status, Task

pytestmark = pytest.mark.django_db


def admin_url(name: str, *args: str) -> str:
    return reverse(f"admin:tasks_task_{name}", args=args)


def add_form(**changes) -> dict:
    data = {
        "type": "echo",
        "description": "",
        "domain": "",
        "drift_score": 0.0,
        "priority": 0,
        "max_attempts": "",
        "run_after_0": "",
        "run_after_1": "",
        "unique_key": "",
        "params": "{}",
    }
    return {**data, **changes}


def finished_and_held(key: str = "k") -> tuple[str, str]:
    """A FAILED task whose key a newer QUEUED task holds: (the failed one, the holder)."""
    old = queue.submit(type="echo", unique_key=key).task["id"]
    Task.objects.filter(id=old).update(status=Status.FAILED)
    return old, queue.submit(type="echo", unique_key=key).task["id"]


def test_admin_add_sets_a_unique_key_and_lists_it(admin_client):
    assert admin_client.post(admin_url("add"), add_form(unique_key="nightly")).status_code == 302
    task = Task.objects.get()
    assert task.unique_key == "nightly" and task.status == Status.QUEUED
    listing = admin_client.get(admin_url("changelist"), {"q": "nightly"}).content.decode()
    assert "nightly" in listing and task.short_id in listing
    assert admin_client.post(admin_url("add"), add_form()).status_code == 302  # no key: fine
    assert Task.objects.filter(unique_key__isnull=True).count() == 1


def test_admin_add_of_a_held_key_is_a_form_error_naming_the_holder(admin_client):
    holder = queue.submit(type="echo", unique_key="nightly").task
    response = admin_client.post(admin_url("add"), add_form(unique_key="nightly"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert holder["id"] in str(errors["unique_key"]) and "already holds" in str(errors)
    assert Task.objects.count() == 1


@pytest.mark.parametrize(("key", "message"), [("k" * 201, "at most 200"), ("a\x00b", "NUL")])
def test_admin_add_refuses_a_bad_key(admin_client, key, message):
    response = admin_client.post(admin_url("add"), add_form(unique_key=key))
    assert response.status_code == 200
    assert "unique_key" in response.context["adminform"].form.errors
    assert not Task.objects.exists()


def test_admin_change_shows_the_key_read_only(admin_client):
    task = queue.submit(type="echo", unique_key="nightly").task
    page = admin_client.get(admin_url("change", task["id"]))
    assert "nightly" in page.content.decode()
    assert "unique_key" not in page.context["adminform"].form.fields


def test_admin_status_edit_to_queued_refuses_a_held_key(admin_client):
    old, holder = finished_and_held()
    row = Task.objects.get(id=old)
    form = {**add_form(params="{}"), "type": row.type, "status": "QUEUED"}
    form.pop("unique_key")
    response = admin_client.post(admin_url("change", old), form, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Status not changed" in page and holder in page
    assert selectors.get_task(old)["status"] == Status.FAILED


def test_admin_run_now_action_reports_the_held_key(admin_client):
    old, holder = finished_and_held()
    response = admin_client.post(
        admin_url("changelist"),
        {"action": "run_now_action", "_selected_action": [old]},
        follow=True,
    )
    assert f"held by unfinished task {holder}" in response.content.decode()
    assert selectors.get_task(old)["status"] == Status.FAILED


def test_dashboard_run_now_and_bulk_retry_report_the_held_key(admin_client):
    old, holder = finished_and_held()
    response = admin_client.post(
        reverse("dashboard:task_action", args=[old]), {"action": "run"}, follow=True
    )
    assert response.status_code == 200
    assert f"held by unfinished task {holder}" in response.content.decode()
    response = admin_client.post(
        reverse("dashboard:task_bulk"), {"action": "retry", "ids": [old]}, follow=True
    )
    assert response.status_code == 200
    assert f"held by unfinished task {holder}" in response.content.decode()
    assert selectors.get_task(old)["status"] == Status.FAILED


def test_the_task_page_shows_its_unique_key(admin_client):
    task = queue.submit(type="echo", unique_key="nightly-report").task
    page = admin_client.get(reverse("dashboard:task", args=[task["id"]])).content.decode()
    assert "Unique key" in page and "nightly-report" in page
    plain = queue.submit(type="echo").task
    assert (
        "Unique key"
        not in admin_client.get(reverse("dashboard:task", args=[plain["id"]])).content.decode()
    )
