"""Two dispatchers' wakers on real NOTIFYs from PostgreSQL: a task inserted while both are
idle wakes its owner at once; the other only if the task stays unclaimed."""

import asyncio

import pytest

from organism.waker import NotifyWaker, owner
from tasks import queue

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_insert_wakes_its_owner_and_a_claim_spares_the_other():
    async def scenario():
        wakers = [NotifyWaker(index=i, peers=2, fallback_seconds=0.5) for i in range(2)]
        try:
            # The first call starts each listener; LISTEN taking effect wakes it once.
            assert await asyncio.gather(*(waker(5) for waker in wakers)) == [True, True]
            task = await asyncio.to_thread(queue.enqueue, type="echo")
            first = owner(str(task["id"]), 2)
            other = 1 - first
            assert await wakers[first](5)
            claimed = await asyncio.to_thread(queue.claim, dispatcher="d", batch=10)
            assert [str(row["id"]) for row in claimed] == [str(task["id"])]
            # The other dispatcher heard of the task, then of its claim: past the fallback,
            # it is still asleep.
            assert not await wakers[other](1.0)

            # Unclaimed, a task wakes the other dispatcher once the fallback has passed.
            task = await asyncio.to_thread(queue.enqueue, type="echo")
            first = owner(str(task["id"]), 2)
            started = asyncio.get_running_loop().time()
            assert await wakers[1 - first](5)
            assert asyncio.get_running_loop().time() - started >= 0.4
        finally:
            for waker in wakers:
                waker.close()

    asyncio.run(scenario())
