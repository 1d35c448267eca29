"""Records encoded straight into a v2 record batch's buffer, a run at a time.

kafka-python's ``DefaultRecordBatchBuilder.append`` checks every argument's type and
encodes each varint a byte at a time through a callback: about 1.6 us per record, the
largest cost of a batch publish. :func:`fill` writes the same bytes (the tests compare
them with kafka-python's) for a run of records whose types ``publish`` already settled,
with the small varints from a table, and updates the builder's counters as its
``append`` would. It is kafka-python's internals (pinned minor version); the builder
still compresses, heads and checksums the batch when it closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka.record.util import encode_varint

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]
"""Key, value and headers of a record."""

_TABLE_SIZE = 1 << 14


def _encoded(value: int) -> bytes:
    """``value`` as a zigzag varint, as the record format has it."""
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


_VARINTS = [_encoded(value) for value in range(_TABLE_SIZE)]
_NAMES: dict[str, bytes] = {}  # a header name with its length, encoded: there are few names


def varint(value: int) -> bytes:
    return _VARINTS[value] if 0 <= value < _TABLE_SIZE else _encoded(value)


def _name(name: str) -> bytes:
    encoded = _NAMES.get(name)
    if encoded is None:
        data = name.encode("utf-8")
        encoded = _NAMES[name] = varint(len(data)) + data
    return encoded


def fill(memory: Any, records: Sequence[Record], start: int, timestamp_ms: int) -> int:
    """Encode ``records[start:]`` in order into ``memory`` (an open v2 ``MemoryRecordsBuilder``) while they
    fit; the index of the first that did not (``len(records)`` when all did). Into an empty batch the
    first record always goes, as kafka-python's ``append`` lets it."""
    if memory._closed:
        return start
    builder = memory._builder
    buffer: bytearray = builder._buffer
    room = builder._batch_size - len(buffer)
    if builder._first_timestamp is None:
        builder._first_timestamp = builder._max_timestamp = timestamp_ms
    head = b"\x00" + varint(timestamp_ms - builder._first_timestamp)  # attributes, timestamp delta
    first = offset = memory._next_offset
    empty = builder._num_records == 0
    varints, name_of, table_size = _VARINTS, _name, _TABLE_SIZE
    index, end = start, len(records)
    while index < end:
        key, value, headers = records[index]
        parts = [head, varints[offset] if offset < table_size else _encoded(offset)]
        if key is None:
            parts.append(b"\x01")  # length -1
        else:
            parts += (varint(len(key)), key)
        parts += (varint(len(value)), value, varints[len(headers)])
        for name, data in headers:
            parts += (name_of(name), varint(len(data)), data)
        body = b"".join(parts)
        record = varint(len(body)) + body
        if len(record) > room and not (empty and offset == first):
            break
        buffer += record
        room -= len(record)
        offset += 1
        index += 1
    if offset != first:
        builder._num_records += offset - first
        builder._last_offset = offset - 1
        memory._next_offset = offset
        builder._max_timestamp = max(builder._max_timestamp, timestamp_ms)
    return index
