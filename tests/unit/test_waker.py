"""Sharing out NOTIFYs: one dispatcher claims each new task at once, the others only if it
stays unclaimed (organism.waker)."""

import asyncio
import json
import uuid

from organism.waker import MAX_TRACKED, NotifyWaker, owner
from tasks.queue import WAKE_PAYLOAD


def _ids_falling_to(index: int, peers: int, count: int = 1) -> list[str]:
    found = []
    while len(found) < count:
        task_id = str(uuid.uuid4())
        if owner(task_id, peers) == index:
            found.append(task_id)
    return found


def _payload(*changes: tuple[str, str]) -> str:
    return json.dumps([[task_id, status, "echo"] for task_id, status in changes])


def _wakers(peers: int = 2, fallback: float = 0.05) -> list[NotifyWaker]:
    return [NotifyWaker(index=i, peers=peers, fallback_seconds=fallback) for i in range(peers)]


def _woken(wakers: list[NotifyWaker]) -> list[bool]:
    return [waker._claimable.is_set() for waker in wakers]


def test_owners_share_random_ids_out_evenly():
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[owner(str(uuid.uuid4()), 3)] += 1
    assert all(800 < count < 1200 for count in counts), counts


def test_a_new_task_wakes_only_its_owner_at_once():
    async def scenario():
        wakers = _wakers()
        (task_id,) = _ids_falling_to(1, 2)
        for waker in wakers:
            waker._notified(_payload((task_id, "QUEUED")))
        assert _woken(wakers) == [False, True]

    asyncio.run(scenario())


def test_a_task_its_owner_does_not_claim_wakes_the_others_after_the_fallback():
    async def scenario():
        wakers = _wakers(peers=3)
        (task_id,) = _ids_falling_to(0, 3)
        for waker in wakers:
            waker._notified(_payload((task_id, "RETRY")))
        assert _woken(wakers) == [True, False, False]
        await asyncio.sleep(0.1)
        assert _woken(wakers) == [True, True, True]
        assert not wakers[1]._others

    asyncio.run(scenario())


def test_a_task_claimed_within_the_fallback_wakes_no_one_else():
    async def scenario():
        wakers = _wakers()
        claimed, unclaimed = _ids_falling_to(0, 2, count=2)
        for waker in wakers:
            waker._notified(_payload((claimed, "QUEUED"), (unclaimed, "QUEUED")))
        wakers[0]._claimable.clear()
        for waker in wakers:
            waker._notified(_payload((claimed, "RUNNING")))
        await asyncio.sleep(0.1)
        assert _woken(wakers) == [False, True]  # for the one still QUEUED only
        wakers[1]._claimable.clear()
        for waker in wakers:
            waker._notified(_payload((unclaimed, "RUNNING")))
        await asyncio.sleep(0.1)
        assert _woken(wakers) == [False, False]

        # Claimed in time: the fallback passes and nobody else looks.
        (task_id,) = _ids_falling_to(0, 2)
        for waker in wakers:
            waker._notified(_payload((task_id, "QUEUED")))
        wakers[0]._claimable.clear()
        for waker in wakers:
            waker._notified(_payload((task_id, "RUNNING")))
        await asyncio.sleep(0.1)
        assert _woken(wakers) == [False, False]
        assert wakers[1]._fallback_timer is None

    asyncio.run(scenario())


def test_a_resume_and_an_unknown_payload_wake_every_dispatcher():
    async def scenario():
        for payload in (WAKE_PAYLOAD, '{"QUEUED": 1}', '["QUEUED"]'):
            wakers = _wakers()
            for waker in wakers:
                waker._notified(payload)
            assert _woken(wakers) == [True, True], payload

    asyncio.run(scenario())


def test_status_changes_that_make_nothing_claimable_wake_no_one():
    async def scenario():
        wakers = _wakers()
        for waker in wakers:
            waker._notified(_payload((str(uuid.uuid4()), "COMPLETED")))
        assert _woken(wakers) == [False, False]

    asyncio.run(scenario())


def test_a_lone_dispatcher_wakes_for_every_claimable_task():
    async def scenario():
        (waker,) = _wakers(peers=1)
        waker._notified(_payload((str(uuid.uuid4()), "QUEUED")))
        assert waker._claimable.is_set()

    asyncio.run(scenario())


def test_a_dispatcher_behind_a_backlog_claims_rather_than_track_it():
    async def scenario():
        waker = _wakers(fallback=60)[1]
        ids = _ids_falling_to(0, 2, count=MAX_TRACKED + 1)
        waker._notified(_payload(*((task_id, "QUEUED") for task_id in ids[:MAX_TRACKED])))
        assert not waker._claimable.is_set()
        waker._notified(_payload((ids[-1], "QUEUED")))
        assert waker._claimable.is_set()
        assert not waker._others
        waker.close()

    asyncio.run(scenario())
