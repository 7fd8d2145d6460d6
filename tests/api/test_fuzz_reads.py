"""The list's query strings, forged cursors, task IDs in paths and credentials, under
hypothesis: whatever is sent, no 5xx, JSON errors that say what is wrong, and answers that
are right (a page holds exactly the tasks it should; a junk credential never gets in).
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote, quote_from_bytes

import pytest
from django.http import QueryDict
from django.utils.encoding import repercent_broken_unicode
from hypothesis import event, given
from hypothesis import strategies as st

from tasks import selectors
from tasks.models import Task
from tests.api.fuzzing import NASTY_CHARACTERS, answer, error_fields, fuzz, hostile_text, undone

pytestmark = pytest.mark.django_db

STATUSES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "RETRY", "CANCELLED"]
FILTERS = ["status", "type", "domain", "created_after", "created_before", "id", "cursor", "limit"]
BASE_TIME = datetime(2030, 1, 1, tzinfo=UTC)
# IDs that share prefixes, so a short ID can be unique, ambiguous or unknown.
SEEDED_IDS = [
    "abcd0000-0000-4000-8000-000000000001",
    "abcd0000-0000-4000-8000-000000000002",
    "abcd1000-0000-4000-8000-000000000003",
    "abce0000-0000-4000-8000-000000000004",
    "0123abcd-0000-4000-8000-000000000005",
    "ffffffff-ffff-4fff-bfff-ffffffffffff",
    "00000000-0000-4000-8000-000000000000",
]
SEEDED_TYPES = ["echo", "fail", "ünï\u202e", "'; --"]


def seed(ids: list[str], millis: list[int]) -> list[tuple[datetime, str]]:
    """Tasks with these IDs created these many milliseconds after BASE_TIME (ties on
    purpose), in several statuses, types and domains; returns (created_at, id) newest first."""
    rows = []
    for n, (task_id, ms) in enumerate(zip(ids, millis, strict=True)):
        Task.objects.create(
            id=uuid.UUID(task_id),
            type=SEEDED_TYPES[n % len(SEEDED_TYPES)],
            status=STATUSES[n % len(STATUSES)],
            domain=[None, "a", "b"][n % 3],
        )
        created = BASE_TIME + timedelta(milliseconds=ms)
        Task.objects.filter(id=task_id).update(created_at=created)
        rows.append((created, task_id))
    return sorted(rows, key=lambda row: (row[0], uuid.UUID(row[1])), reverse=True)


@pytest.fixture
def seeded() -> list[tuple[datetime, str]]:
    return seed(SEEDED_IDS, [0, 0, 7, 7, 7, 1000, 86_400_000])


def items_in_order(items: list[dict]) -> bool:
    keys = [(datetime.fromisoformat(i["created_at"]), uuid.UUID(i["id"])) for i in items]
    return keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)


def get(client, path: str, **headers):
    return client.generic("GET", path, **headers)


# ---------------------------------------------------------------------------------------------
# GET /tasks query strings

query_keys = st.sampled_from([*FILTERS, "ids", "Status", "limit[]", "\x00", "status\x00"])
query_values = (
    st.binary(max_size=30)
    | hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass"))
    | st.sampled_from(
        [*STATUSES, "queued", "", "0", "-1", "501", "500", "1e2", "abcd", "ABCD-"]
    ).map(str.encode)
    | st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: str(n).encode())
    | st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda dt: dt.isoformat().encode())
)


@fuzz(250)
@given(pairs=st.lists(st.tuples(query_keys, query_values), max_size=5))
def test_any_query_string_lists_what_it_asks_for_or_names_what_is_wrong(api, seeded, pairs):
    query = "&".join(f"{quote(key)}={quote_from_bytes(value, safe='')}" for key, value in pairs)
    sent = QueryDict(query)  # what the server reads: the last value of each key
    response = get(api, "/tasks?" + query)
    body = answer(response)
    event(f"answered {response.status_code}")
    if response.status_code == 200:
        items = body["items"]
        assert items_in_order(items)
        for key in ("status", "type", "domain"):
            if sent.get(key):
                assert all(item[key] == sent[key] for item in items), (key, items)
        if sent.get("id"):
            digits = sent["id"].strip().replace("-", "").lower()
            assert all(item["id"].replace("-", "").startswith(digits) for item in items)
        if sent.get("limit"):
            assert len(items) <= int(sent["limit"])
    elif response.status_code == 422:
        assert error_fields(body) <= set(sent), body
    else:
        assert response.status_code == 400, body
        assert sent.get("id") is not None or sent.get("cursor"), body
        assert re.search("task ID|hex digits|cursor", body["detail"]), body


@pytest.mark.parametrize("column", ["type", "domain"])
def test_a_filter_holding_nul_matches_nothing_rather_than_failing(seeded, column):
    # The API refuses it (422); the dashboard and the CLI pass their filters straight through.
    assert selectors.list_tasks(selectors.TaskFilter(**{column: "echo\x00"})).items == []


def test_a_query_with_more_fields_than_django_reads_is_a_400(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    response = get(api, "/tasks?" + "&".join(f"f{n}=1" for n in range(11)))
    body = answer(response)
    assert response.status_code == 400 and "DATA_UPLOAD_MAX_NUMBER_FIELDS" in body["detail"]


# ---------------------------------------------------------------------------------------------
# Cursors


def forge(created_at: datetime, task_id: str) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Cursor times at the precision the column keeps on both databases (milliseconds): near the
# seeded rows, on them, or anywhere from year 1 to 9999 in any offset.
cursor_times = st.builds(
    lambda ms, tz: (BASE_TIME + timedelta(milliseconds=ms)).astimezone(tz),
    st.sampled_from([-1, 0, 1, 6, 7, 8, 999, 1000, 1001, 86_400_000, 86_400_001])
    | st.integers(min_value=-(10**6), max_value=10**8),
    offsets,
) | st.builds(
    lambda dt, tz: dt.replace(microsecond=dt.microsecond // 1000 * 1000, tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    offsets,
)
cursor_ids = st.sampled_from(SEEDED_IDS) | st.uuids().map(str)


@fuzz(200)
@given(created=cursor_times, task_id=cursor_ids, limit=st.integers(min_value=1, max_value=8))
def test_a_well_formed_forged_cursor_pages_exactly_from_where_it_points(
    api, seeded, created, task_id, limit
):
    try:
        position = (created.astimezone(UTC), uuid.UUID(task_id))
    except OverflowError:  # no instant in UTC: the server must refuse it, not choke on it
        position = None
    response = get(api, f"/tasks?limit={limit}&cursor={forge(created, task_id)}")
    body = answer(response)
    if position is None:
        assert response.status_code == 400 and "cursor" in body["detail"], body
        return
    assert response.status_code == 200, body
    later = [row for row in seeded if (row[0], uuid.UUID(row[1])) < position]
    assert [item["id"] for item in body["items"]] == [row[1] for row in later[:limit]]
    assert (body["next_cursor"] is None) == (len(later) <= limit)


def mutate(text: str, at: int, char: str, how: str) -> str:
    at %= len(text) + 1
    if how == "replace":
        return text[:at] + char + text[at + 1 :]
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "delete":
        return text[:at] + text[at + 1 :]
    return text[:at]  # truncate


junk_cursors = (
    hostile_text
    | st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).decode())
    | hostile_text.map(
        lambda text: base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()
    )
    | st.builds(
        lambda left, right: (
            base64.b64encode(f"{left}|{right}".encode("utf-8", "surrogatepass"))
            .decode()
            .rstrip("=")
        ),
        hostile_text | st.datetimes().map(datetime.isoformat),
        hostile_text | st.uuids().map(str),
    )
)


@fuzz(120)
@given(
    junk=junk_cursors,
    tamper=st.tuples(
        st.integers(min_value=0),
        st.sampled_from([*NASTY_CHARACTERS, "A", "=", "-", "_", "/", "+"]),
        st.sampled_from(["replace", "insert", "delete", "truncate"]),
    ),
    from_real=st.booleans(),
)
def test_a_junk_or_tampered_cursor_is_a_400_or_a_well_ordered_page(
    api, seeded, junk, tamper, from_real
):
    if from_real:
        real = get(api, "/tasks?limit=2").json()["next_cursor"]
        cursor = mutate(real, *tamper)
    else:
        cursor = junk
    encoded = quote_from_bytes(cursor.encode("utf-8", "surrogatepass"), safe="")
    response = get(api, f"/tasks?limit=3&cursor={encoded}")
    body = answer(response)
    event(f"answered {response.status_code}")
    if response.status_code == 200:
        assert items_in_order(body["items"])
    elif response.status_code == 422:
        assert error_fields(body) == {"cursor"}, body
    else:
        assert response.status_code == 400 and "cursor" in body["detail"], body


@fuzz(40)
@given(
    millis=st.lists(st.sampled_from([0, 1, 2, 999, 1000, 60_000]), min_size=1, max_size=12),
    limit=st.integers(min_value=1, max_value=5),
)
def test_walking_the_pages_yields_every_task_once_newest_first(api, millis, limit):
    with undone():
        ids = [str(uuid.uuid4()) for _ in millis]
        expected = [task_id for _, task_id in seed(ids, millis)]
        seen: list[str] = []
        cursor = ""
        for _ in range(len(ids) + 1):
            body = answer(get(api, f"/tasks?limit={limit}&cursor={cursor}"))
            seen += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == expected


# ---------------------------------------------------------------------------------------------
# Task IDs in paths: detail, status, run now, cancel

ID_TEXT = re.compile(r"-*([0-9a-fA-F]-*){4,32}")
CANCELLABLE = {"QUEUED", "RETRY", "RUNNING", "CANCELLED"}
RUNNABLE = {"FAILED", "CANCELLED", "RETRY", "QUEUED"}


def typed_prefix(task_id: str, length: int, upper: list[bool], dashes: list[int]) -> str:
    """A prefix of an ID as a person might type it: any case, dashes anywhere."""
    digits = [
        c.upper() if up else c for c, up in zip(task_id.replace("-", ""), upper * 32, strict=False)
    ]
    text = digits[:length]
    for at in dashes:
        text.insert(at % (len(text) + 1), "-")
    return "".join(text)


id_segments = (
    st.binary(min_size=1, max_size=40).filter(lambda raw: b"/" not in raw)
    | hostile_text.filter(lambda text: text and "/" not in text).map(
        lambda text: text.encode("utf-8", "surrogatepass")
    )
    | st.builds(
        typed_prefix,
        st.sampled_from(SEEDED_IDS),
        st.integers(min_value=1, max_value=34),
        st.lists(st.booleans(), min_size=1, max_size=4),
        st.lists(st.integers(min_value=0), max_size=3),
    ).map(str.encode)
    | st.text("0123456789abcdefABCDEF-", min_size=1, max_size=40).map(str.encode)
    | st.uuids().map(lambda task_id: str(task_id).encode())
    | st.sampled_from([" abcd ", "abcd\n", "\u3000abce\u3000", "{abcd}", "urn:uuid:abcd"]).map(
        str.encode
    )
)


@fuzz(250)
@given(
    segment=id_segments,
    endpoint=st.sampled_from(["GET {}", "GET {}/status", "POST {}/run", "POST {}/cancel"]),
)
def test_any_id_in_a_path_finds_one_task_or_says_why_not(api, seeded, segment, endpoint):
    method, path = endpoint.split(" ")
    path = "/tasks/" + path.format(quote_from_bytes(segment, safe=""))
    text = repercent_broken_unicode(segment).decode().strip()  # as Django and the API read it
    with undone():
        response = api.generic(method, path)
        body = answer(response)
        event(f"answered {response.status_code}")
        if not ID_TEXT.fullmatch(text):
            assert response.status_code == 400, body
            assert re.search("task ID|hex digits", body["detail"]), body
            return
        digits = text.replace("-", "").lower()
        matches = [i for i in sorted(SEEDED_IDS) if i.replace("-", "").startswith(digits)]
        if not matches:
            assert response.status_code == 404, body
        elif len(matches) > 1:
            assert response.status_code == 409, body
            assert body["candidates"] == matches[:5]
        elif method == "GET":
            assert response.status_code == 200 and body["id"] == matches[0], body
        else:
            before = Task.objects.get(id=matches[0]).status
            allowed = RUNNABLE if path.endswith("/run") else CANCELLABLE
            assert response.status_code == (200 if before in allowed else 409), body
            after = Task.objects.get(id=matches[0]).status
            if response.status_code == 409:
                assert body["status"] == before == after
            elif path.endswith("/run"):
                assert after == body["status"] == "QUEUED"
            else:
                assert after == ("RUNNING" if before == "RUNNING" else "CANCELLED")


# ---------------------------------------------------------------------------------------------
# Credentials

latin1_text = st.text(st.characters(max_codepoint=255), max_size=60)


@fuzz(120)
@given(
    scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer:", ""]),
    gap=st.sampled_from([" ", "  ", "\t", "", " \x00"]),
    credential=st.sampled_from(["token", "junk"]) | latin1_text,
    tamper=st.tuples(
        st.integers(min_value=0),
        st.sampled_from(["\x00", " ", "A", "~", "\xe9"]),
        st.sampled_from(["replace", "insert", "delete", "truncate"]),
    ),
    tampered=st.booleans(),
    unsafe=st.booleans(),
)
def test_a_malformed_authorization_header_never_gets_in(
    client, api_token, scheme, gap, credential, tamper, tampered, unsafe
):
    if credential == "token":
        credential = mutate(api_token, *tamper) if tampered else api_token
    header = f"{scheme}{gap}{credential}"
    with undone():
        if unsafe:
            response = client.generic(
                "POST",
                "/tasks",
                b'{"type": "echo"}',
                content_type="application/json",
                HTTP_AUTHORIZATION=header,
            )
        else:
            response = get(client, "/tasks", HTTP_AUTHORIZATION=header)
        body = answer(response)
        event(f"answered {response.status_code}")
        if api_token in header:
            assert response.status_code in (200, 201, 401), body
        else:
            assert response.status_code == 401, body
            assert response["WWW-Authenticate"].startswith("Bearer")
            assert not Task.objects.exists()
    exact = get(client, "/tasks", HTTP_AUTHORIZATION=f"{scheme} {api_token}")
    assert exact.status_code == (200 if scheme.lower() == "bearer" else 401)


@fuzz(60)
@given(value=latin1_text, unsafe=st.booleans())
def test_a_session_cookie_of_any_shape_is_a_401(client, value, unsafe):
    cookie = {"HTTP_COOKIE": f"sessionid={value}"}
    with undone():
        if unsafe:
            response = client.generic(
                "POST", "/tasks", b'{"type": "echo"}', content_type="application/json", **cookie
            )
        else:
            response = get(client, "/tasks", **cookie)
        body = answer(response)
        assert response.status_code == 401, body
        assert not Task.objects.exists()
