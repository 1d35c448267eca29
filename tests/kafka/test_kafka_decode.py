"""records.decoded against kafka-python's own reading of the same v2 batches: no broker needed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import encode_varint

from bridgeq_kafka.records import _varint, decoded

headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=300)), max_size=4)
records = st.lists(
    st.tuples(st.none() | st.binary(max_size=200), st.none() | st.binary(max_size=20_000), headers),
    min_size=1,
    max_size=40,
).filter(lambda rs: all(key is not None or value is not None for key, value, _ in rs))


def _batch(rows: list, compression: int, base: int = 0, gaps: int = 1) -> bytes:
    builder = DefaultRecordBatchBuilder(2, compression, False, -1, -1, -1, 1 << 30)
    for n, (key, value, hs) in enumerate(rows):
        builder.append(base + n * gaps, 1_700_000_000_000 + n * 997, key, value, hs)
    return bytes(builder.build())


@settings(max_examples=150, deadline=None)
@given(rows=records, compression=st.sampled_from([0, DefaultRecordBatch.CODEC_GZIP]), gaps=st.integers(1, 300))
def test_decoded_reads_what_kafka_python_reads(rows, compression, gaps) -> None:
    data = _batch(rows, compression, base=1234, gaps=gaps)
    theirs = [(r.offset, r.key, r.value, r.headers) for r in DefaultRecordBatch(data)]
    ours = list(decoded(DefaultRecordBatch(data)))
    assert ours == theirs
    assert [offset for offset, *_ in ours] == [1234 + n * gaps for n in range(len(rows))]


@given(st.integers(-(2**63), 2**63 - 1))
def test_varints_round_trip(value) -> None:
    encoded = bytearray()
    encode_varint(value, encoded.append)
    assert _varint(encoded + b"\x00", 0) == (value, len(encoded))


def test_a_truncated_batch_is_corrupt_not_a_crash() -> None:
    data = bytearray(_batch([(b"k", b"v" * 50, [("h", b"x")])], 0))
    data[-3:] = b"\xff\xff\xff"  # the last header's value length no longer ends where the record does
    batch = DefaultRecordBatch(bytes(data))
    with pytest.raises(CorruptRecordError):
        list(decoded(batch))
