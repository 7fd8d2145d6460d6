"""Task listings: newest first, keyset pages, filters; dispatcher heartbeats."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from tasks import heartbeats, queue, selectors
from tasks.ids import InvalidTaskId

pytestmark = pytest.mark.django_db(transaction=True)


def _all_pages(task_filter=None, limit=3) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = selectors.list_tasks(task_filter, cursor=cursor, limit=limit)
        pages.append([item["id"] for item in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_pages_walk_every_task_newest_first_once():
    ids = []
    for n in range(7):
        ids.append(queue.enqueue(type="echo", params={"n": n})["id"])
        time.sleep(0.003)
    assert _all_pages() == [ids[6:3:-1], ids[3:0:-1], ids[:1]]


def test_pages_split_tasks_created_in_the_same_instant_without_repeats():
    ids = queue.enqueue_many([{"type": "echo"} for _ in range(10)])
    pages = _all_pages(limit=4)
    seen = [task_id for page in pages for task_id in page]
    assert [len(page) for page in pages] == [4, 4, 2]
    assert sorted(seen) == sorted(ids)


def test_items_hold_the_listing_fields_and_a_string_id():
    task = queue.enqueue(type="echo", domain="d", description="say")
    (item,) = selectors.list_tasks().items
    assert set(item) == set(selectors.LIST_FIELDS)
    assert (item["id"], item["status"], item["domain"]) == (task["id"], "QUEUED", "d")


def test_filters_by_status_type_domain_and_id_prefix():
    a = queue.enqueue(type="echo", domain="x")
    b = queue.enqueue(type="sum", domain="y")
    queue.cancel(b["id"])

    def ids(**kwargs):
        return [i["id"] for i in selectors.list_tasks(selectors.TaskFilter(**kwargs)).items]

    assert ids(status="CANCELLED") == [b["id"]]
    assert ids(type="echo") == [a["id"]]
    assert ids(domain="y") == [b["id"]]
    assert ids(id_prefix=a["id"][:8].upper()) == [a["id"]]
    assert ids(status="QUEUED", type="sum") == []


def test_filters_by_creation_time():
    old = queue.enqueue(type="echo")
    time.sleep(0.02)
    middle = datetime.now(UTC)
    time.sleep(0.02)
    new = queue.enqueue(type="echo")
    after = selectors.TaskFilter(created_after=middle)
    before = selectors.TaskFilter(created_before=middle)
    assert [i["id"] for i in selectors.list_tasks(after).items] == [new["id"]]
    assert [i["id"] for i in selectors.list_tasks(before).items] == [old["id"]]
    in_future = selectors.TaskFilter(created_after=middle + timedelta(hours=1))
    assert selectors.list_tasks(in_future).items == []


def test_a_malformed_id_prefix_is_invalid():
    with pytest.raises(InvalidTaskId):
        selectors.list_tasks(selectors.TaskFilter(id_prefix="xyz!"))


@pytest.mark.parametrize("cursor", ["garbage", "bm90IGEgY3Vyc29y", "%%%"])
def test_a_malformed_cursor_is_refused(cursor):
    with pytest.raises(selectors.InvalidCursor, match="next_cursor"):
        selectors.list_tasks(cursor=cursor)


def test_the_page_size_is_clamped():
    queue.enqueue_many([{"type": "echo"} for _ in range(3)])
    assert len(selectors.list_tasks(limit=0).items) == 1
    assert len(selectors.list_tasks(limit=10_000).items) == 3


def test_list_dispatchers_shows_each_heartbeat():
    heartbeats.beat(name="b", node="n2", pid=2, in_flight=0, processed=5)
    heartbeats.beat(name="a", node="n1", pid=1, in_flight=3, processed=9)
    rows = selectors.list_dispatchers()
    assert [(r["name"], r["node"], r["pid"], r["in_flight"], r["processed"]) for r in rows] == [
        ("a", "n1", 1, 3, 9),
        ("b", "n2", 2, 0, 5),
    ]
    assert all(r["last_beat_at"] is not None for r in rows)
    assert all(r["alive"] and r["beat_age"] < 5 and r["circuit"] == "closed" for r in rows)
