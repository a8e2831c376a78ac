"""A worker's prompt progress (low-water mark + finished slots above it), without Ray or Redis."""

import random

import pytest

from slime_rl.rollout.progress import PromptProgress


def test_out_of_order_finishes_keep_a_low_water_mark():
    p = PromptProgress()
    assert [p.next_slot() for _ in range(5)] == [0, 1, 2, 3, 4]
    for slot in (1, 3, 0):
        p.finish(slot)
    assert (p.low, p.above, p.finished) == (2, {3}, 3)
    p.finish(2)
    assert (p.low, p.above) == (4, set())
    with pytest.raises(ValueError, match="slot 3 finished twice"):
        p.finish(3)


def test_a_restored_worker_redoes_exactly_the_slots_in_flight():
    before = PromptProgress()
    started = [before.next_slot() for _ in range(6)]  # 0..5 in flight
    for slot in (0, 1, 3, 5):  # pushed; 2 and 4 were in flight when the worker died
        before.finish(slot)
    after = PromptProgress.from_wire(before.to_wire())
    assert started == list(range(6)) and after.finished == 4
    assert [after.next_slot() for _ in range(3)] == [2, 4, 6]

    gap = PromptProgress(3, {4, 5, 6, 7})  # the one slot left: once it is done, the mark jumps over the rest
    assert gap.next_slot() == 3
    gap.finish(3)
    assert gap.low == 8 and gap.next_slot() == 8


def test_slots_given_back_are_handed_out_first_and_in_order():
    p = PromptProgress()
    slots = [p.next_slot() for _ in range(4)]
    p.finish(slots[0])
    p.give_back(3)
    p.give_back(1)
    assert [p.next_slot() for _ in range(3)] == [1, 3, 4]
    with pytest.raises(ValueError, match="slot 0 is finished"):
        p.give_back(0)


def test_bad_states_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="every finished slot above low"):
        PromptProgress(3, {2})
    with pytest.raises(ValueError, match="prompt progress"):
        PromptProgress.from_wire(b'{"low": 1}')
    assert PromptProgress.from_wire(b'{"low":2,"above":[4]}') == PromptProgress(2, {4})


def test_random_crashes_never_skip_or_repeat_a_slot():
    """Groups finish in random order; the worker dies at random points; only what was written with a push survives.
    Over all lives, every slot below the final mark is pushed exactly once."""
    rng = random.Random(7)
    stored = None  # the state written with the last push (what the buffer holds)
    pushed: list[int] = []
    for _life in range(30):
        p = PromptProgress.from_wire(stored) if stored else PromptProgress()
        in_flight: list[int] = []
        for _ in range(rng.randint(0, 25)):
            if len(in_flight) < 4 and rng.random() < 0.6:
                in_flight.append(p.next_slot())
            elif in_flight:
                slot = in_flight.pop(rng.randrange(len(in_flight)))
                p.finish(slot)
                pushed.append(slot)
                stored = p.to_wire()
    final = PromptProgress.from_wire(stored)
    assert len(pushed) == len(set(pushed)), "a slot was pushed twice"
    assert set(range(final.low)) <= set(pushed) and set(pushed) == set(range(final.low)) | final.above
