"""Fetched records as plain tuples: what bridgeq reads of a record, without kafka-python's per-record extras.

kafka-python turns every fetched record into a 13-field ``ConsumerRecord``, runs two deserializer
calls, and sums its header sizes, before handing it over; bridgeq reads four fields and builds its
own delivery from them. A member's fetcher makes ``(offset, key, value, headers)`` tuples instead,
with the same batch checks (CRC, control batches, leader epoch, fetch position) as kafka-python's.

The hook is ``Fetcher.PartitionRecords``, looked up on the fetcher instance: it is set on the
member's own fetcher only, never on the class. It is kafka-python's internals, so the extra pins
kafka-python's minor version and tests/kafka/test_kafka_records.py compares both paths on a real
broker. Where a consumer needs what the lean path skips (read_committed's aborted-transaction
filtering, deserializers) kafka-python's records are converted instead (see ``lean``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError

log = logging.getLogger("bridgeq.kafka")

LeanRecord = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]
"""offset, key, value, headers."""


def lean(record: Any) -> LeanRecord:
    """A record of kafka-python's own as a lean tuple (a consumer the hook could not be set on)."""
    if isinstance(record, tuple) and not hasattr(record, "_fields"):
        return record
    return (record.offset, record.key, record.value, record.headers or [])


class LeanPartitionRecords(Fetcher.PartitionRecords):
    """One partition's fetched records, yielded as ``LeanRecord`` tuples."""

    def _maybe_skip_record(self, record: Any) -> bool:
        return bool(record[0] < self.fetch_offset)

    def _unpack_records(self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any) -> Iterator[Any]:
        if key_deserializer is not None or value_deserializer is not None or self.isolation_level != 0:
            yield from map(lean, super()._unpack_records(tp, records, key_deserializer, value_deserializer))
            return
        check_crcs = self.check_crcs
        last_batch = None
        try:
            batch = records.next_batch()
            while batch is not None:
                last_batch = batch
                if check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(
                        f"Record batch for partition {tp} at offset {batch.base_offset} failed crc check"
                    )
                v2 = batch.magic == 2
                if v2:
                    self.leader_epoch = batch.leader_epoch
                    if batch.is_control_batch:  # a transaction marker: never a message
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                read = 0
                for record in decoded(batch) if v2 else _legacy(batch, tp, check_crcs):
                    self.next_fetch_offset = record[0] + 1
                    read += 1
                    yield record
                self.records_read += read
                self.bytes_read += batch.size_in_bytes if v2 else 0
                batch = records.next_batch()
            if last_batch is not None and last_batch.magic == 2:
                # a compacted batch's last record may be gone: the next fetch starts after the batch
                self.next_fetch_offset = last_batch.next_offset
            self.drain()
        except StopIteration:  # inside a generator it would end the iteration silently
            log.exception("StopIteration raised unpacking a record batch")
            raise RuntimeError("StopIteration raised unpacking a record batch") from None


def decoded(batch: Any) -> Iterator[LeanRecord]:
    """The records of a v2 batch (already CRC-checked) as lean tuples, read straight from its bytes.

    A record (Kafka's protocol guide): length varint, attributes int8, timestamp delta varlong,
    offset delta varint, key (varint length, -1 for null), value (likewise), header count varint,
    then each header: key (varint length, UTF-8), value (varint length, -1 for null). Varints are
    zigzag-encoded; most fields here take one or two bytes, so both are read inline.
    """
    iter(batch)  # uncompresses the batch's records in place
    buffer: bytearray = batch._buffer
    pos: int = batch._pos
    base = batch.base_offset
    try:
        for _ in range(batch.records_count):
            length, pos = _varint(buffer, pos)
            end = pos + length
            pos += 1  # attributes: unused
            while buffer[pos] & 0x80:  # the timestamp delta: not needed
                pos += 1
            delta, pos = _varint(buffer, pos + 1)
            size, pos = _varint(buffer, pos)
            key = None
            if size >= 0:
                key = bytes(buffer[pos : pos + size])
                pos += size
            size, pos = _varint(buffer, pos)
            value = None
            if size >= 0:
                value = bytes(buffer[pos : pos + size])
                pos += size
            count, pos = _varint(buffer, pos)
            headers: list[tuple[str, bytes | None]] = []
            for _ in range(count):
                size, pos = _varint(buffer, pos)
                name = buffer[pos : pos + size].decode("utf-8")
                size, pos = _varint(buffer, pos + size)
                header = None
                if size >= 0:
                    header = bytes(buffer[pos : pos + size])
                    pos += size
                headers.append((name, header))
            if pos != end or size < -1:
                raise CorruptRecordError(f"record at offset {base + delta}: its fields do not add up to its length")
            yield (base + delta, key, value, headers)
    except (IndexError, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"a record batch at offset {base} cannot be read: {exc!r}") from None
    if pos != len(buffer):
        raise CorruptRecordError(f"{len(buffer) - pos} unread bytes after the records of the batch at offset {base}")


def _legacy(batch: Any, tp: Any, check_crcs: bool) -> Iterator[LeanRecord]:
    """The records of an old-format (v0/v1) batch, which brokers before Kafka 4 may still hold."""
    for record in batch:
        if check_crcs and not record.validate_crc():
            raise CorruptRecordError(f"Record for partition {tp} at offset {record.offset} failed crc check")
        yield (record.offset, record.key, record.value, record.headers or [])


def _varint(buffer: bytearray, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos``, and the position after it."""
    first = buffer[pos]
    if first < 0x80:
        return (first >> 1) ^ -(first & 1), pos + 1
    second = buffer[pos + 1]
    if second < 0x80:
        value = (first & 0x7F) | (second << 7)
        return (value >> 1) ^ -(value & 1), pos + 2
    value, shift, pos = (first & 0x7F) | ((second & 0x7F) << 7), 14, pos + 2
    while True:
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("a varint longer than 10 bytes")


def install(consumer: Any) -> bool:
    """Make ``consumer``'s fetcher yield lean tuples; False (records stay kafka-python's) where it cannot."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or getattr(fetcher, "PartitionRecords", None) is not Fetcher.PartitionRecords:
        return False
    fetcher.PartitionRecords = LeanPartitionRecords
    return True
