"""POST /tasks under hypothesis: bodies the schema-driven fuzzer does not send.

Whatever the body, the answer is no 5xx, JSON, and either 201 with the task stored exactly as
sent or a 4xx naming the field that is wrong, with no row left behind.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.utils.dateparse import parse_datetime
from hypothesis import event, given
from hypothesis import strategies as st

from tasks.models import Task
from tasks.validation import MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH, NewTask, TaskFields
from tests.api.fuzzing import (
    answer,
    error_fields,
    fuzz,
    holds_bad_text,
    hostile_json,
    legal_character,
    legal_json,
    legal_text,
    same_json,
    undone,
)

pytestmark = pytest.mark.django_db

FIELDS = tuple(NewTask.model_fields)
TEXT_FIELDS = {"type", "description", "domain", "unique_key"}
ORGANISM_FIELDS = set(TaskFields.model_fields)
STORED = ("id", "status", "attempts", *FIELDS)

offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
task_types = st.text(legal_character, min_size=1, max_size=60) | st.sampled_from(
    ["echo", "x" * 200, "'; DROP TABLE tasks; --", "\\u0000", "\U0001f600" * 200]
)
valid_bodies = st.fixed_dictionaries(
    {"type": task_types},
    optional={
        "params": st.dictionaries(legal_text, legal_json, max_size=5),
        "description": st.none() | legal_text | st.just("d" * 10_000),
        "domain": st.none() | legal_text,
        "drift_score": st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0, 1]),
        "priority": st.integers(-1000, 1000) | st.integers(-1000, 1000).map(float),
        "max_attempts": st.none() | st.integers(1, 100),
        "run_after": st.none() | aware_datetimes.map(datetime.isoformat),
        "unique_key": st.none() | st.text(legal_character, min_size=1, max_size=200),
    },
)
# Times at the ends of the range, in offsets that push them past it, and malformed ones.
EDGE_DATETIMES = [
    "0001-01-01T00:00:00+00:30",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-00:01",
    "9999-12-31T23:59:59.999999Z",
    "2030-02-30T00:00:00Z",
    "2030-01-01T24:00:00Z",
    "2030-01-01T00:00:00+24:00",
    "2030-01-01T00:00:00.1234567Z",
    "2030-01-01T00:00:00",
    "2030-01-01",
    "20300101T000000Z",
]
# Any JSON value at all for one field, the wrong types included.
any_field_value = (
    hostile_json | aware_datetimes.map(datetime.isoformat) | st.sampled_from(EDGE_DATETIMES)
)


def post(client, body: Any, *, content_type: str = "application/json", path: str = "/tasks"):
    """POST a body as is: bytes untouched, text as UTF-8, anything else as JSON (lone
    surrogates escaped as "\\udXXX", as any JSON library writes them)."""
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    # generic(), not post(): post() re-encodes the bytes for a charset in the content type.
    return client.generic("POST", path, data, content_type=content_type)


def stored_row(task_id: str) -> dict[str, Any]:
    row = Task.objects.values(*STORED).get(id=task_id)
    return {**row, "id": str(row["id"])}


def in_utc(text: str) -> datetime | None:
    """A submitted run_after as the instant the server should store, or None if it cannot."""
    parsed = parse_datetime(text)
    try:
        return parsed.astimezone(UTC) if parsed and parsed.tzinfo else None
    except OverflowError:
        return None


def assert_stored_as_sent(sent: dict[str, Any], reply: dict[str, Any]) -> None:
    """The row holds each field exactly as sent (defaults otherwise), and so does the 201
    answer, whose times are in milliseconds (Django's JSON encoder writes them so)."""
    for shown, in_reply in ((reply, True), (stored_row(reply["id"]), False)):
        assert shown["status"] == "QUEUED" and shown["attempts"] == 0
        assert shown["type"] == sent["type"]
        assert same_json(sent.get("params", {}), shown["params"]), (sent, shown["params"])
        assert shown["description"] == sent.get("description")
        assert shown["domain"] == sent.get("domain")
        assert shown["drift_score"] == sent.get("drift_score", 0.0)
        assert shown["priority"] == sent.get("priority", 0)
        assert shown["max_attempts"] == sent.get("max_attempts")
        assert shown["unique_key"] == sent.get("unique_key")
        run_after = shown["run_after"]
        if isinstance(run_after, str):
            run_after = parse_datetime(run_after)
        expected = None if sent.get("run_after") is None else in_utc(sent["run_after"])
        if expected and in_reply:
            expected = expected.replace(microsecond=expected.microsecond // 1000 * 1000)
        assert run_after == expected


def assert_refused_naming(response, fields: set[str]) -> None:
    body = answer(response)
    assert response.status_code == 422, body
    assert error_fields(body) == fields, body
    for field in fields:
        assert field in body["detail"], body


@fuzz(60)
@given(body=valid_bodies)
def test_a_valid_body_is_stored_exactly_as_sent(api, body):
    with undone():
        response = post(api, body)
        reply = answer(response)
        assert response.status_code == 201, reply
        assert_stored_as_sent(body, reply)
        assert Task.objects.count() == 1


@fuzz(300)
@given(
    body=valid_bodies,
    field=st.sampled_from([*FIELDS, "unknown_field", "Type", "params\x00"]),
    value=any_field_value,
)
def test_any_value_in_one_field_is_stored_as_sent_or_refused_naming_that_field(
    api, body, field, value
):
    body = {**body, field: value}
    with undone():
        response = post(api, body)
        reply = answer(response)
        event(f"answered {response.status_code}")
        if response.status_code == 201:
            assert field in FIELDS, reply
            assert not holds_bad_text(value)
            if field in TEXT_FIELDS:
                assert isinstance(value, str) or (value is None and field != "type")
            assert_stored_as_sent(body, reply)
        else:
            assert_refused_naming(response, {field})
            assert not Task.objects.exists()


def poison(text: str, bad: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + bad + text[at:]


@fuzz(100)
@given(
    body=valid_bodies,
    where=st.sampled_from(
        ["type", "description", "domain", "unique_key", "params key", "params value"]
    ),
    bad=st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ud800\x00"]),
    at=st.integers(min_value=0),
    nested=st.integers(min_value=0, max_value=4),
    # The organism endpoints check a task the same way, before anything reaches Ray.
    path=st.sampled_from(["/tasks", "/organism/execute-random", "/organism/organs/o1/execute"]),
)
def test_a_nul_or_a_lone_surrogate_anywhere_is_a_422_naming_the_field(
    api, body, where, bad, at, nested, path
):
    if path != "/tasks":
        body = {key: value for key, value in body.items() if key in ORGANISM_FIELDS}
    if where.startswith("params"):
        text = poison("k", bad, at)
        inner: Any = {text: 1} if where == "params key" else text
        for _ in range(nested):
            inner = [inner]
        body = {**body, "params": {"p": inner}}
        field = "params"
    else:
        body = {**body, where: poison(body.get(where) or "", bad, at)}
        field = where
    with undone():
        # json.dumps writes a lone surrogate as the escape "\udXXX", as a client would.
        assert_refused_naming(post(api, body, path=path), {field})
        assert not Task.objects.exists()


NUMBER_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1E400",
    "1e-400",
    "4.9e-324",
    "-0",
    "-0.0",
    "0e0",
    "1e2",
    "2.0",
    "1.5",
    "1000",
    "1000.0",
    "1000.0000000000001",
    "1001",
    "-1000",
    "-1001",
    "100",
    "101",
    "1",
    "0",
    "true",
    '"5"',
    "null",
    "9" * 19,
    "9" * 20,
    "9" * 309,
    "9" * 4300,
    "9" * 4301,
    "-" + "9" * 5000,
]
number_tokens = (
    st.sampled_from(NUMBER_TOKENS)
    | st.integers(min_value=-(10**40), max_value=10**40).map(str)
    | st.floats(allow_nan=False).map(json.dumps)
)


def number_is_valid(field: str, value: Any) -> bool:
    """The documented rule for each numeric field (JSON has one number type: 3.0 is whole)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value is None and field == "max_attempts"
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if field == "drift_score":
        return 0 <= value <= 1
    whole = isinstance(value, int) or value.is_integer()
    low, high = (-1000, 1000) if field == "priority" else (1, 100)
    return whole and low <= value <= high


@fuzz(120)
@given(
    field=st.sampled_from(["drift_score", "priority", "max_attempts", "params"]),
    token=number_tokens,
)
def test_numbers_at_and_past_every_limit_follow_the_documented_rule(api, field, token):
    if field == "params":
        raw = '{"type": "echo", "params": {"n": ' + token + "}}"
    else:
        raw = '{"type": "echo", "' + field + '": ' + token + "}"
    try:
        sent = json.loads(raw)
    except ValueError:  # more digits than Python reads: the server cannot read them either
        sent = None
    with undone():
        response = post(api, raw)
        reply = answer(response)
        event(f"answered {response.status_code}")
        if sent is None:
            assert response.status_code == 400, reply
        elif field == "params":
            number = sent["params"]["n"]
            finite = not isinstance(number, float) or math.isfinite(number)
            assert response.status_code == (201 if finite else 422), reply
        else:
            valid = number_is_valid(field, sent[field])
            assert response.status_code == (201 if valid else 422), reply
        if response.status_code == 201:
            assert_stored_as_sent(sent, reply)
        else:
            if response.status_code == 422:
                assert error_fields(reply) == {field}, reply
            assert not Task.objects.exists()


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "",
]
not_objects = (
    st.binary(max_size=200)
    | hostile_json.filter(lambda value: not isinstance(value, dict)).map(json.dumps)
    | st.sampled_from(['{"type": "echo"', '{"type": "echo"}}', "{'type': 'echo'}", "\ufeff{}"])
    | st.just(b'{"type": "\xff\xfe"}')
    | st.just('{"type": "echo", "params": ' + "[" * 5000 + "]" * 5000 + "}")
    | st.integers(min_value=1, max_value=5000).map(lambda n: '{"type": "echo"}' * 2 * n)
)


@fuzz(60)
@given(raw=not_objects, content_type=st.sampled_from(CONTENT_TYPES))
def test_a_body_that_is_not_one_json_object_is_refused_leaving_no_row(api, raw, content_type):
    with undone():
        response = post(api, raw, content_type=content_type)
        answer(response)
        assert 400 <= response.status_code < 500
        assert not Task.objects.exists()


def nested(depth: int, leaf: Any, as_object: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_object else [value]
    return value


@fuzz(40)
@given(
    depth=st.integers(min_value=1, max_value=1200) | st.sampled_from([98, 99, 100, 101, 914]),
    as_object=st.booleans(),
    width=st.integers(min_value=0, max_value=MAX_PARAMS_BYTES + 1000),
)
def test_deep_or_wide_params_are_stored_or_refused_never_a_500(api, depth, as_object, width):
    params = {"wide": "w" * width, "deep": nested(depth, 1, as_object)}
    try:
        raw = json.dumps({"type": "echo", "params": params})
    except RecursionError:  # deeper than this process can write; the server sees less
        return
    size = len(json.dumps(params).encode())
    with undone():
        response = post(api, raw)
        reply = answer(response)
        event(f"answered {response.status_code}")
        if response.status_code == 201:
            assert depth + 1 <= MAX_PARAMS_DEPTH and size <= MAX_PARAMS_BYTES
            assert_stored_as_sent(json.loads(raw), reply)
        else:
            # 422 for a limit; 400 when nesting is too deep for the server to parse at all
            assert response.status_code in (400, 422), reply
            assert depth + 1 > MAX_PARAMS_DEPTH or size > MAX_PARAMS_BYTES
            if response.status_code == 422:
                assert error_fields(reply) == {"params"}, reply
            assert not Task.objects.exists()


def test_a_body_over_the_upload_limit_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(api, {"type": "echo", "description": "x" * 2000})
    body = answer(response)
    assert response.status_code == 413 and "1000 bytes" in body["detail"]
    assert not Task.objects.exists()


submissions = st.lists(
    valid_bodies
    | st.builds(
        lambda body, field, value: {**body, field: value},
        valid_bodies,
        st.sampled_from(FIELDS),
        any_field_value,
    )
    | st.builds(
        lambda body, bad: {**body, "type": body["type"] + bad},
        valid_bodies,
        st.sampled_from(["\x00", "\udc80"]),
    )
    | not_objects,
    min_size=1,
    max_size=12,
)


@fuzz(25)
@given(batch=submissions)
def test_every_accepted_submission_is_stored_once_and_no_refused_one_is(api, batch):
    with undone():
        accepted = []
        for body in batch:
            response = post(api, body)
            reply = answer(response)
            event(f"answered {response.status_code}")
            if response.status_code == 201:
                accepted.append((body, reply))
        assert Task.objects.count() == len(accepted)
        assert len({reply["id"] for _, reply in accepted}) == len(accepted)
        for body, reply in accepted:
            assert_stored_as_sent(body, reply)
