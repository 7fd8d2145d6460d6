"""The schedules endpoints: list, Run now, Pause, Resume, with their scopes and errors."""

from __future__ import annotations

import pytest
from django.test import Client

from tasks import schedules
from tasks.auth import create_token
from tasks.models import Schedule, ScheduleRun, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def schedule() -> Schedule:
    return schedules.save(Schedule(name="hourly", type="echo", interval_seconds=3600))


def test_list_shows_each_schedule_with_its_runs(api, schedule):
    task_id = schedules.run_now(schedule.pk)
    [listed] = api.get("/schedules").json()
    assert listed["name"] == "hourly" and listed["interval_seconds"] == 3600
    assert listed["enabled"] and listed["next_run_at"]
    assert listed["last_task_id"] == task_id and listed["last_task_status"] == "QUEUED"


def test_run_now_pause_and_resume(api, schedule):
    ran = api.post(f"/schedules/{schedule.pk}/run")
    assert ran.status_code == 200
    assert ScheduleRun.objects.get(schedule=schedule).task_id.hex == ran.json()["task_id"].replace(
        "-", ""
    )
    paused = api.post(f"/schedules/{schedule.pk}/pause").json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    resumed = api.post(f"/schedules/{schedule.pk}/resume").json()
    assert resumed["enabled"] is True and resumed["next_run_at"]


@pytest.mark.parametrize("schedule_id", ["999999", str(2**63 - 1)])
def test_an_unknown_schedule_is_404(api, schedule_id):
    response = api.post(f"/schedules/{schedule_id}/run")
    assert response.status_code == 404 and "no schedule" in response.json()["detail"]


@pytest.mark.parametrize("schedule_id", ["0", str(2**63), "abc"])
def test_an_impossible_id_is_422(api, schedule_id):
    assert api.post(f"/schedules/{schedule_id}/pause").status_code == 422


def test_a_read_token_lists_but_cannot_operate(api_user, schedule):
    reader = Client(headers={"Authorization": f"Bearer {create_token(api_user)[1]}"})
    assert reader.get("/schedules").status_code == 200
    for action in ("run", "pause", "resume"):
        assert reader.post(f"/schedules/{schedule.pk}/{action}").status_code == 403
    assert not Task.objects.exists()
    schedule.refresh_from_db()
    assert schedule.enabled
    assert Client().get("/schedules").status_code == 401
