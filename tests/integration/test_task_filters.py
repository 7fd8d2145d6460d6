"""The task filter's search fields: params containment, error text, updated time, bad input."""

from datetime import UTC, datetime, timedelta

import pytest

from tasks import queue, selectors
from tasks.models import Task
from tasks.selectors import InvalidFilter, TaskFilter

pytestmark = pytest.mark.django_db


def ids(task_filter: TaskFilter) -> set[str]:
    return {row["id"] for row in selectors.list_tasks(task_filter, limit=500).items}


def test_params_containment_matches_nested_objects_and_numbers():
    a = queue.enqueue(type="echo", params={"customer": 42, "order": {"id": 7, "tags": ["x", "y"]}})
    b = queue.enqueue(type="echo", params={"customer": 42, "order": {"id": 8}})
    c = queue.enqueue(type="echo", params={"customer": "42"})
    queue.enqueue(type="echo", params={})
    assert ids(TaskFilter(params={"customer": 42})) == {a["id"], b["id"]}
    assert ids(TaskFilter(params={"customer": "42"})) == {c["id"]}  # a string is not a number
    assert ids(TaskFilter(params={"order": {"id": 7}})) == {a["id"]}
    assert ids(TaskFilter(params={"order": {"tags": ["y"]}})) == {a["id"]}
    assert ids(TaskFilter(params={"customer": 42.0})) == {a["id"], b["id"]}
    assert ids(TaskFilter(params={"customer": 43})) == set()


def test_error_text_is_a_case_insensitive_substring_with_literal_wildcards():
    def with_error(error: str) -> str:
        task = queue.enqueue(type="echo")
        Task.objects.filter(id=task["id"]).update(error=error)
        return task["id"]

    percent = with_error("Disk 100% full")
    underscore = with_error("bad_value in row")
    plain = with_error("Disk 1000 full; badXvalue")
    queue.enqueue(type="echo")  # no error at all
    assert ids(TaskFilter(error="100%")) == {percent}
    assert ids(TaskFilter(error="BAD_VALUE")) == {underscore}
    assert ids(TaskFilter(error="disk")) == {percent, plain}
    assert ids(TaskFilter(error="\x00")) == set()


def test_time_ranges_on_created_and_updated():
    old = queue.enqueue(type="echo")
    new = queue.enqueue(type="echo")
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    Task.objects.filter(id=old["id"]).update(created_at=hour_ago - timedelta(hours=1))
    # The trigger stamps updated_at on every update: back-date it with the trigger off.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tasks DISABLE TRIGGER USER")
        cursor.execute("UPDATE tasks SET updated_at = %s WHERE id = %s", [hour_ago, old["id"]])
        cursor.execute("ALTER TABLE tasks ENABLE TRIGGER USER")
    recent = datetime.now(UTC) - timedelta(minutes=5)
    assert ids(TaskFilter(updated_after=recent)) == {new["id"]}
    assert ids(TaskFilter(updated_before=recent)) == {old["id"]}
    assert ids(TaskFilter(created_before=hour_ago)) == {old["id"]}
    assert ids(TaskFilter(created_after=hour_ago, updated_after=recent)) == {new["id"]}


@pytest.mark.parametrize(
    "text",
    ["customer=42", "[1, 2]", "42", '"x"', "null", '{"a": "\\u0000"}', '{"a": NaN}', "{" * 5000],
)
def test_a_params_filter_that_is_no_storable_json_object_names_the_field(text):
    with pytest.raises(InvalidFilter) as caught:
        selectors.parse_params_filter(text)
    assert caught.value.field == "params"
    assert str(caught.value).startswith("params: ")


def test_params_and_time_filters_as_typed():
    assert selectors.parse_params_filter("  ") is None
    assert selectors.parse_params_filter('{"customer": {"id": 42}}') == {"customer": {"id": 42}}
    # datetime-local gives no offset: the server's zone (UTC) is meant.
    assert selectors.parse_time_filter("created_after", "2026-12-02T14:00") == datetime(
        2026, 12, 2, 14, 0, tzinfo=UTC
    )
    for bad in ("yesterday", "2026-13-01T00:00", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(InvalidFilter, match="^updated_before: "):
            selectors.parse_time_filter("updated_before", bad)


def test_a_filter_survives_its_json_form():
    task_filter = TaskFilter(
        status="FAILED",
        params={"customer": 42},
        error="boom",
        updated_after=datetime(2026, 12, 1, tzinfo=UTC),
        id_prefix="abcd",
    )
    assert TaskFilter.from_json(task_filter.describe()) == task_filter
    assert TaskFilter().is_empty() and not task_filter.is_empty()
