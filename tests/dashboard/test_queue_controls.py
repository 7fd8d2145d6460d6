"""The dashboard's queue controls: the paused banner, the Queue section, its buttons, and the
reasons a task waits, through Django's test client and the real engine."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks import queue, selectors

pytestmark = pytest.mark.django_db


def act(client, **fields):
    return client.post(reverse("dashboard:queue_action"), fields, follow=True)


def test_no_banner_while_nothing_is_paused(organism_admin_client):
    queue.enqueue(type="resize")
    for page in ("dashboard:overview", "dashboard:tasks"):
        assert b"paused-banner" not in organism_admin_client.get(reverse(page)).content


def test_pausing_a_type_shows_a_banner_on_both_pages_with_a_resume_button(organism_admin_client):
    queue.enqueue(type="resize")
    response = act(organism_admin_client, action="pause", type="resize", back="tasks")
    assert response.redirect_chain[-1][0] == reverse("dashboard:tasks")
    assert "Paused type resize; running tasks finish." in response.content.decode()
    assert selectors.queue_control("resize")["paused"]

    for page in ("dashboard:overview", "dashboard:tasks"):
        text = organism_admin_client.get(reverse(page)).content.decode()
        assert 'id="paused-banner"' in text and "type resize" in text
        assert "Resume type resize" in text

    rows = organism_admin_client.get(reverse("dashboard:tasks")).content.decode()
    assert "type resize is paused" in rows  # the waiting badge of its row

    act(organism_admin_client, action="resume", type="resize")
    assert not selectors.queue_state().anything_paused


def test_pause_all_and_resume_all(organism_admin_client):
    act(organism_admin_client, action="pause", all="1")
    text = organism_admin_client.get(reverse("dashboard:overview")).content.decode()
    assert "all types" in text and "Resume all claiming" in text
    assert selectors.queue_state().all_paused
    act(organism_admin_client, action="resume", all="1")
    assert not selectors.queue_state().all_paused


def test_the_queue_section_lists_types_with_state_limit_and_running(organism_admin_client):
    queue.enqueue_many([{"type": "resize"}, {"type": "resize"}, {"type": "echo"}])
    queue.declare_concurrency({"resize": 3})
    queue.claim(dispatcher="d1", batch=1)
    queue.pause("echo")

    types = {
        t["type"]: t
        for t in organism_admin_client.get(reverse("dashboard:overview")).context["queue"]["types"]
    }

    assert types["echo"]["paused"] and types["resize"]["limit"] == 3
    assert sum(t["running"] for t in types.values()) == 1


def test_set_and_clear_a_limit(organism_admin_client):
    act(organism_admin_client, action="limit", type="resize", limit="2")
    assert selectors.queue_control("resize")["concurrency_limit"] == 2
    act(organism_admin_client, action="limit", type="resize", limit="")
    assert selectors.queue_control("resize")["concurrency_limit"] is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "pause", "type": ""}, "type: must name a task type"),
        ({"action": "pause", "type": "x" * 201}, "type: must be at most 200 characters"),
        ({"action": "limit", "type": "resize", "limit": "two"}, "limit: must be a whole number"),
        ({"action": "limit", "type": "resize", "limit": "0"}, "limit: must be between 1"),
        ({"action": "limit", "type": "resize", "limit": "²"}, "limit: must be a whole number"),
        ({"action": "limit", "all": "1", "limit": "3"}, "action must be"),
        ({"action": "explode", "type": "resize"}, "action must be"),
    ],
)
def test_bad_input_is_a_message_not_an_error(organism_admin_client, fields, message):
    response = act(organism_admin_client, **fields)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not selectors.queue_state().anything_paused
    assert selectors.queue_control("resize")["limit"] is None


def test_the_task_page_says_why_a_task_waits(organism_admin_client):
    task = queue.enqueue(type="resize")
    queue.pause()
    text = organism_admin_client.get(reverse("dashboard:task", args=[task["id"]])).content.decode()
    assert "Waiting: all claiming is paused." in text


@pytest.mark.parametrize("role", [None, "viewer"])
def test_queue_actions_need_the_operators_permission(client, make_user, role):
    client.force_login(make_user("someone", role))
    response = client.post(reverse("dashboard:queue_action"), {"action": "pause", "all": "1"})
    assert response.status_code == 403
    assert not selectors.queue_state().anything_paused


def test_the_admin_pauses_and_limits_through_the_queue(admin_client):
    add = reverse("admin:tasks_queuecontrol_add")
    response = admin_client.post(add, {"type": "resize", "paused": "on", "concurrency_limit": "2"})
    assert response.status_code == 302
    control = selectors.queue_control("resize")
    assert control["paused"] and control["paused_at"] and control["concurrency_limit"] == 2

    change = reverse("admin:tasks_queuecontrol_change", args=["resize"])
    admin_client.post(change, {"concurrency_limit": "3"})  # unticked: resumed
    control = selectors.queue_control("resize")
    assert not control["paused"] and control["concurrency_limit"] == 3

    queue.pause()  # all types: not an admin row (its key is blank), so not listed there
    assert (
        "all types"
        not in admin_client.get(reverse("admin:tasks_queuecontrol_changelist")).content.decode()
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "x" * 201, "paused": "on"}, "type"),
        ({"type": "resize", "concurrency_limit": "0"}, "concurrency_limit"),
        ({"type": "", "paused": "on"}, "type"),
    ],
)
def test_the_admin_form_refuses_bad_input(admin_client, fields, field):
    response = admin_client.post(reverse("admin:tasks_queuecontrol_add"), fields)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not selectors.queue_state().anything_paused
