"""bridgeq_kafka.encoding.fill writes the bytes kafka-python's own builder writes (no broker needed)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecordsBuilder

from bridgeq_kafka.encoding import fill, varint

keys = st.none() | st.binary(max_size=300)
values = st.binary(max_size=20_000)
headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=200)), max_size=3)
records = st.lists(st.tuples(keys, values, headers), min_size=1, max_size=40)


def by_kafka_python(builder: MemoryRecordsBuilder, batch: list[Any], start: int, timestamp: int) -> int:
    index = start
    while index < len(batch) and builder.append(timestamp, *batch[index]) is not None:
        index += 1
    return index


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.tuples(keys, values, headers), max_size=5),
    batch=records,
    start=st.integers(0, 3),
    batch_size=st.sampled_from([1, 200, 4096, 65536]),
    compression=st.sampled_from([0, 1]),
    first_timestamp=st.integers(0, 2**41),
    later=st.integers(-5000, 10**9),
)
def test_fill_writes_what_kafka_python_writes(
    before: list[Any],
    batch: list[Any],
    start: int,
    batch_size: int,
    compression: int,
    first_timestamp: int,
    later: int,
) -> None:
    start = min(start, len(batch) - 1)
    ours, theirs = (MemoryRecordsBuilder(2, compression, batch_size) for _ in range(2))
    for builder in (ours, theirs):  # records already in the batch, by kafka-python
        held = by_kafka_python(builder, before, 0, first_timestamp)
    timestamp = first_timestamp + later
    taken = fill(ours, batch, start, timestamp)
    assert taken == by_kafka_python(theirs, batch, start, timestamp)
    assert ours.next_offset() == theirs.next_offset()
    for builder in (ours, theirs):
        builder.close()
    assert bytes(ours.buffer()) == bytes(theirs.buffer())
    decoded = [(r.key, r.value, r.headers) for r in DefaultRecordBatch(bytes(ours.buffer()))]
    assert decoded == before[:held] + batch[start:taken]


def test_a_first_record_larger_than_the_batch_goes_in_alone() -> None:
    builder = MemoryRecordsBuilder(2, 0, 100)
    big = (None, b"x" * 500, [("ce_id", b"1")])
    assert fill(builder, [big, big], 0, 1) == 1
    assert fill(builder, [big], 0, 1) == 0


def test_a_closed_batch_takes_nothing() -> None:
    builder = MemoryRecordsBuilder(2, 0, 1 << 16)
    builder.close()
    assert fill(builder, [(None, b"x", [])], 0, 1) == 0


def test_varints_past_the_table() -> None:
    assert varint(0) == b"\x00"
    assert varint(63) == b"\x7e"
    assert varint(64) == b"\x80\x01"
    assert varint(1 << 20) == b"\x80\x80\x80\x01"
    assert varint(-1) == b"\x01"
