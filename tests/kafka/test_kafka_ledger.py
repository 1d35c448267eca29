"""The contiguous-ack watermark and its commit metadata, without a broker."""

from __future__ import annotations

import random

import pytest

from bridgeq_kafka.ledger import MAGIC, METADATA_LIMIT, Ledger, acked_count, decode, encode


def delivered(ledger: Ledger, offsets: range) -> list[int]:
    return [ledger.deliver(offset) for offset in offsets]


def test_in_order_acks_move_the_watermark_one_past_the_last() -> None:
    ledger = Ledger(10)
    assert delivered(ledger, range(10, 15)) == [1] * 5
    assert ledger.commit() == (10, "bridgeq:1;delivered=0*1,1*1,2*1,3*1,4*1")
    for offset in range(10, 15):
        ledger.ack(offset)
    assert ledger.commit() == (15, "")


def test_out_of_order_acks_never_commit_past_an_unacked_offset() -> None:
    ledger = Ledger(0)
    delivered(ledger, range(6))
    for offset in (5, 3, 1, 4):
        ledger.ack(offset)
    offset, metadata = ledger.commit() or (None, None)
    assert offset == 0, "0 is not acked: nothing may be committed past it"
    assert decode(0, metadata or "")[0] == {1, 3, 4, 5}
    ledger.ack(0)
    assert ledger.commit() == (2, "bridgeq:1;acked=1-3;delivered=0*1")  # 2 still open; 3, 4, 5 acked above it
    ledger.ack(2)
    assert ledger.commit() == (6, "")


def test_the_watermark_is_the_lowest_unacked_offset_for_any_ack_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        count = rng.randint(1, 40)
        ledger = Ledger(100)
        delivered(ledger, range(100, 100 + count))
        acked: set[int] = set()
        for offset in rng.sample(range(100, 100 + count), rng.randint(0, count)):
            ledger.ack(offset)
            acked.add(offset)
            expected = min(set(range(100, 100 + count)) - acked, default=100 + count)
            assert ledger.watermark() == expected


def test_a_commit_is_only_proposed_when_something_changed() -> None:
    ledger = Ledger(0)
    ledger.deliver(0)
    point = ledger.commit()
    assert point is not None
    ledger.sent = point
    assert ledger.commit() is None
    ledger.ack(0)
    assert ledger.commit() == (1, "")


def test_requeue_keeps_the_offset_open_and_counts_the_attempt() -> None:
    ledger = Ledger(0)
    delivered(ledger, range(3))
    assert ledger.redeliver(1) == 2
    assert ledger.redeliver(1) == 3
    ledger.ack(0)
    ledger.ack(2)
    assert ledger.commit() == (1, "bridgeq:1;acked=1;delivered=0*3")
    assert ledger.redeliver(0) == 0, "acked: not pending any more"


def test_a_new_owner_skips_acked_offsets_and_continues_attempt_counts() -> None:
    first = Ledger(0)
    delivered(first, range(5))
    first.redeliver(0)
    for offset in (1, 3):
        first.ack(offset)
    mark, metadata = first.commit() or (0, "")
    second = Ledger(mark, metadata)
    assert [second.deliver(offset) for offset in range(0, 6)] == [3, 0, 2, 0, 2, 1]


def test_bulk_delivery_and_acks_commit_exactly_what_one_at_a_time_does() -> None:
    """deliver_all/ack_all (the member's hot path) against deliver/ack, polls and ack batches at random,
    starting from metadata an earlier owner left (acked offsets and attempt counts ahead of the commit)."""
    rng = random.Random(11)
    for _ in range(300):
        start = rng.randint(0, 50)
        earlier = Ledger(start)
        delivered(earlier, range(start, start + rng.randint(0, 12)))
        for offset in rng.sample(sorted(earlier.pending), rng.randint(0, len(earlier.pending))):
            earlier.ack(offset)
        base, metadata = earlier.commit() or (start, "")
        bulk, single = Ledger(base, metadata), Ledger(base, metadata)
        position, unacked = base - rng.randint(0, 3), []  # a poll may repeat what was seen (after a seek)
        for _ in range(rng.randint(1, 6)):
            offsets = sorted(rng.sample(range(position, position + 12), rng.randint(1, 8)))  # gaps: compaction
            position = offsets[-1] + 1 - rng.choice([0, 0, 0, 2])
            attempts = bulk.deliver_all(offsets)
            assert (attempts or [1] * len(offsets)) == [single.deliver(offset) for offset in offsets]
            unacked += [o for o, a in zip(offsets, attempts or [1] * len(offsets), strict=True) if a]
            rng.shuffle(unacked)
            acks = unacked[: rng.randint(0, len(unacked))]
            unacked = unacked[len(acks) :]
            bulk.ack_all(acks)
            for offset in acks:
                single.ack(offset)
            assert bulk.commit() == single.commit()


def test_records_seen_before_in_this_assignment_are_not_delivered_again() -> None:
    ledger = Ledger(5)
    assert ledger.deliver(4) == 0, "below the committed offset"
    assert ledger.deliver(5) == 1
    assert ledger.deliver(5) == 0
    fresh = Ledger(None)  # no commit: the first record seen sets the base
    assert fresh.watermark() is None and fresh.commit() is None
    assert fresh.deliver(42) == 1
    assert fresh.watermark() == 42


def test_metadata_round_trips_and_counts_acked_offsets() -> None:
    metadata = encode(1000, {1002, 1003, 1004, 1007}, {1000: 1, 1001: 3, 1005: 2})
    assert metadata == "bridgeq:1;acked=2-4,7;delivered=0*1,1*3,5*2"
    assert decode(1000, metadata) == ({1002, 1003, 1004, 1007}, {1000: 1, 1001: 3, 1005: 2})
    assert acked_count(metadata) == 4
    assert encode(5, set(), {}) == ""


@pytest.mark.parametrize(
    "metadata",
    ["", "something another client wrote", "bridgeq:1;acked=x-y", "bridgeq:1;acked=0-99999999999", "bridgeq:2;acked=1"],
)
def test_foreign_or_broken_metadata_means_nothing_known(metadata: str) -> None:
    assert decode(0, metadata) == (set(), {})
    ledger = Ledger(0, metadata)
    assert ledger.deliver(0) == 1 and ledger.deliver(1) == 1


def test_metadata_stays_under_the_brokers_limit_dropping_what_only_costs_duplicates() -> None:
    acked = set(range(0, 20000, 2))  # 10000 separate ranges
    metadata = encode(0, acked, {offset: 1 for offset in range(1, 20000, 2)})
    assert metadata.startswith(MAGIC) and len(metadata) <= METADATA_LIMIT
    kept, _ = decode(0, metadata)
    assert kept and kept <= acked, "a prefix of what was acked, never an offset that was not"
