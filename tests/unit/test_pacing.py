"""The claim size adapts to the backlog (organism.pacing)."""

from organism.pacing import MAX_CLAIM_BATCH, MIN_CLAIM_BATCH, ClaimSizer


def test_full_claims_double_the_batch_up_to_the_cap():
    sizer = ClaimSizer()
    sizes = []
    for _ in range(12):
        wanted = sizer.wanted(free=10_000, in_flight=0)
        sizes.append(wanted)
        sizer.claimed(wanted, wanted)
    assert sizes[:3] == [MIN_CLAIM_BATCH, MIN_CLAIM_BATCH * 2, MIN_CLAIM_BATCH * 4]
    assert sizes[-1] == MAX_CLAIM_BATCH


def test_a_short_claim_shrinks_the_batch_to_twice_what_it_found():
    sizer = ClaimSizer()
    for _ in range(10):
        sizer.claimed(sizer.wanted(10_000, 0), sizer.wanted(10_000, 0))
    sizer.claimed(MAX_CLAIM_BATCH, 40)
    assert sizer.wanted(10_000, 0) == 80
    sizer.claimed(80, 0)
    assert sizer.wanted(10_000, 0) == MIN_CLAIM_BATCH


def test_a_deep_queue_waits_for_half_a_batch_of_free_slots():
    sizer = ClaimSizer()
    for _ in range(10):
        sizer.claimed(sizer.wanted(10_000, 0), sizer.wanted(10_000, 0))
    # 500 running, 10 free: claiming 10 would make every hop carry a sliver.
    assert sizer.wanted(free=10, in_flight=500) == 0
    assert sizer.wanted(free=MAX_CLAIM_BATCH // 2, in_flight=500) == MAX_CLAIM_BATCH // 2
    # Nothing in flight to free slots: claim what fits rather than wait forever.
    assert sizer.wanted(free=10, in_flight=0) == 10


def test_a_shallow_queue_claims_whatever_slots_are_free():
    sizer = ClaimSizer()
    sizer.claimed(MIN_CLAIM_BATCH, 3)
    assert sizer.wanted(free=2, in_flight=498) == 2


def test_a_fixed_batch_never_changes():
    sizer = ClaimSizer(fixed=50)
    sizer.claimed(50, 50)
    sizer.claimed(50, 50)
    assert sizer.wanted(free=1000, in_flight=0) == 50
    sizer.claimed(50, 1)
    assert sizer.wanted(free=1000, in_flight=0) == 50
    assert sizer.wanted(free=5, in_flight=100) == 5
