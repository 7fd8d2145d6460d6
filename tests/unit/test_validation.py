"""tasks.validation: the one set of rules for a task, whichever way it comes in. Pure."""

from datetime import UTC, datetime

import pytest

from tasks.validation import MAX_PARAMS_DEPTH, InvalidTask, validate_task_spec


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_a_valid_task_comes_back_cleaned_for_enqueue():
    spec = validate_task_spec(
        {
            "type": "echo",
            "params": {"a": [1]},
            "priority": 3.0,
            "run_after": "2030-01-01T01:00+01:00",
        }
    )
    assert spec == {
        "type": "echo",
        "params": {"a": [1]},
        "drift_score": 0.0,
        "priority": 3,
        "run_after": datetime(2030, 1, 1, tzinfo=UTC),
    }


@pytest.mark.parametrize(
    "values, field, why",
    [
        ({"type": ""}, "type", "at least 1 character"),
        ({"type": "a\x00b"}, "type", "should match pattern"),
        ({"type": "echo", "params": {"k": "\x00"}}, "params", "NUL"),
        ({"type": "echo", "params": {"k": "\ud800"}}, "params", "lone surrogates"),
        ({"type": "echo", "params": {"k": nested(MAX_PARAMS_DEPTH)}}, "params", "levels deep"),
        ({"type": "echo", "params": {"k": float("nan")}}, "params", "NaN"),
        ({"type": "echo", "drift_score": 2.0}, "drift_score", "less than or equal to 1"),
        ({"type": "echo", "max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({"type": "echo", "run_after": "tomorrow"}, "run_after", "ISO 8601"),
        ({"type": "echo", "colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_a_refusal_names_the_field(values, field, why):
    with pytest.raises(InvalidTask) as refused:
        validate_task_spec(values)
    assert why in refused.value.errors[field]
    assert str(refused.value).startswith(f"{field}: ")
