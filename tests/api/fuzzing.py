"""What the hypothesis fuzz tests (test_fuzz_*.py) share: hostile values, the checks every
answer must pass, and JSON equality as a client sees it.

Schemathesis (test_schemathesis.py) sends what /api/openapi.json describes; these strategies
send what it cannot describe or does not think of: NUL and lone surrogates deep in a body,
numbers past every limit, bodies that are not JSON, forged cursors, junk credentials.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz(max_examples: int) -> settings:
    """Hypothesis settings for one fuzz test: deterministic, so CI passes or fails the same way
    every run, and no deadline (a 2xx writes to a database). Function-scoped fixtures (the
    token, seeded rows) are meant to be shared by every example of a test."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# Characters that broke real APIs: NUL (PostgreSQL refuses it in text and jsonb), lone
# surrogates (not Unicode at all), quotes and backslashes, percent signs, a right-to-left
# override, a byte-order mark, a non-BMP emoji, a combining mark, line separators.
NASTY_CHARACTERS = [
    "\x00",
    "\ud800",
    "\udfff",
    "'",
    '"',
    "\\",
    "%",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "\u0301",
    "\u2028",
    "\n",
    "\x7f",
]
BAD_CHARACTERS = {"\x00"} | {chr(code) for code in range(0xD800, 0xE000)}

any_character = st.characters(exclude_categories=()) | st.sampled_from(NASTY_CHARACTERS)
legal_character = any_character.filter(lambda char: char not in BAD_CHARACTERS)
hostile_text = st.text(any_character, max_size=40)
legal_text = st.text(legal_character, max_size=40) | st.sampled_from(
    ["", " ", "'; DROP TABLE tasks; --", '{"type": "echo"}', "\\u0000", "null", "%00", "…"]
)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN or infinity: those are sent as raw text where wanted)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**30), max_value=10**30)
        | st.floats(allow_nan=False, allow_infinity=False)
        | text
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=12,
    )


legal_json = json_values(legal_text)
hostile_json = json_values(hostile_text)


def holds_bad_text(value: Any) -> bool:
    """Whether a NUL or a lone surrogate hides anywhere in a JSON value, keys included."""
    if isinstance(value, str):
        return any(char in BAD_CHARACTERS for char in value)
    if isinstance(value, dict):
        return any(holds_bad_text(key) or holds_bad_text(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_bad_text(item) for item in value)
    return False


def same_json(sent: Any, stored: Any) -> bool:
    """Equal as JSON values. Numbers compare by their decimal value, as JSON defines them:
    PostgreSQL's jsonb keeps numbers as numeric and writes 1e+16 back as 10000000000000000,
    the same number, which Python then reads as an int."""
    if isinstance(sent, bool) or isinstance(stored, bool):
        return type(sent) is type(stored) and sent == stored
    if isinstance(sent, int | float) and isinstance(stored, int | float):
        return _decimal(sent) == _decimal(stored)
    if isinstance(sent, dict) and isinstance(stored, dict):
        return sent.keys() == stored.keys() and all(
            same_json(value, stored[key]) for key, value in sent.items()
        )
    if isinstance(sent, list) and isinstance(stored, list):
        return len(sent) == len(stored) and all(map(same_json, sent, stored))
    return type(sent) is type(stored) and sent == stored


def _decimal(number: int | float) -> Decimal:
    return Decimal(number) if isinstance(number, int) else Decimal(repr(number))


def answer(response) -> Any:
    """Check what every API answer must be, whatever was sent: no 5xx, a JSON body, and an
    error that says what went wrong (a 422 names each field). Returns the decoded body."""
    assert response.status_code < 500, (response.status_code, response.content[:2000])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    if response.status_code >= 400:
        assert isinstance(body, dict), body
        assert isinstance(body.get("detail"), str) and body["detail"], body
        if response.status_code == 422:
            assert body["errors"], body
            for error in body["errors"]:
                assert error["field"] and error["message"], body
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    """The top-level fields a 422 names (``params.x.y`` counts as ``params``)."""
    return {error["field"].split(".")[0] for error in body["errors"]}


@contextmanager
def undone() -> Iterator[None]:
    """Run one example's requests in a savepoint that is rolled back, so every example starts
    from the same table (and a failed statement on PostgreSQL cannot poison the next one)."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)
