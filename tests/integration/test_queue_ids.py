"""Short task IDs resolved on the server, through selectors.resolve_id."""

import uuid

import pytest

from tasks import selectors
from tasks.ids import AmbiguousTaskId, InvalidTaskId, TaskNotFound
from tasks.models import Task

pytestmark = pytest.mark.django_db

A = "abcd1234-0000-4000-8000-000000000001"
B = "abcd5678-0000-4000-8000-000000000002"
C = "12345678-9abc-4def-8000-000000000003"


@pytest.fixture
def tasks():
    Task.objects.bulk_create([Task(id=uuid.UUID(value), type="echo") for value in (A, B, C)])


def test_a_full_uuid_resolves(tasks):
    assert selectors.resolve_id(A) == A


def test_a_full_uuid_without_dashes_and_in_upper_case_resolves(tasks):
    assert selectors.resolve_id(A.replace("-", "").upper()) == A


@pytest.mark.parametrize("text", ["1234", "12345678", "123456789ABC", "12345678-9a", " 1234 "])
def test_a_unique_prefix_of_four_or_more_hex_digits_resolves(tasks, text):
    assert selectors.resolve_id(text) == C


def test_a_prefix_matching_several_is_ambiguous_and_names_them(tasks):
    with pytest.raises(AmbiguousTaskId) as raised:
        selectors.resolve_id("ABCD")
    assert raised.value.candidates == [A, B]
    assert A in str(raised.value) and B in str(raised.value)


def test_an_ambiguous_prefix_names_at_most_five_candidates():
    ids = [f"ffff{n:04x}-0000-4000-8000-000000000000" for n in range(8)]
    Task.objects.bulk_create([Task(id=uuid.UUID(value), type="echo") for value in ids])
    with pytest.raises(AmbiguousTaskId) as raised:
        selectors.resolve_id("ffff")
    assert raised.value.candidates == ids[:5]


@pytest.mark.parametrize("text", ["9999", C.replace("3", "4")])
def test_no_match_is_not_found(tasks, text):
    with pytest.raises(TaskNotFound):
        selectors.resolve_id(text)


@pytest.mark.parametrize(
    ("text", "says"), [("123", "too short"), ("12g4", "not a task ID"), ("", "not a task ID")]
)
def test_malformed_ids_are_invalid(tasks, text, says):
    with pytest.raises(InvalidTaskId, match=says):
        selectors.resolve_id(text)
