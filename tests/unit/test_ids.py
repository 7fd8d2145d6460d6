"""Parsing typed task IDs into the UUID range they cover (the database side is in
tests/integration/test_queue_ids.py)."""

import uuid

import pytest

from tasks.ids import InvalidTaskId, parse_id_prefix

FULL = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


def test_a_full_uuid_is_an_exact_range():
    id_range = parse_id_prefix(FULL)
    assert id_range.exact
    assert id_range.low == uuid.UUID(FULL)


def test_a_prefix_covers_every_uuid_that_starts_with_it():
    id_range = parse_id_prefix("3f2a")
    assert not id_range.exact
    assert id_range.low == uuid.UUID("3f2a0000-0000-0000-0000-000000000000")
    assert id_range.high == uuid.UUID("3f2affff-ffff-ffff-ffff-ffffffffffff")


def test_case_dashes_and_spaces_are_ignored():
    assert parse_id_prefix("  3F2A9C1E-5B ") == parse_id_prefix("3f2a9c1e5b")
    assert parse_id_prefix(FULL.upper()) == parse_id_prefix(FULL.replace("-", ""))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3f2", "too short"),
        ("", "not a task ID"),
        ("   ", "not a task ID"),
        ("3f2g", "not a task ID"),
        ("zzzz-1234", "not a task ID"),
        (FULL + "0", "32 hex digits"),
    ],
)
def test_malformed_ids_are_refused_with_the_reason(text, says):
    with pytest.raises(InvalidTaskId, match=says):
        parse_id_prefix(text)
