"""The member's lean fetch path (records.py) against kafka-python's own records, on a real broker.

Transactions put control batches (commit and abort markers) in the log and aborted data before
them: what the lean path must skip, keep, and step over exactly as kafka-python does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bridgeq.testing.support import collect
from bridgeq_kafka.records import LeanRecord, install, lean

GZIPPED = [b"gzipped-1", b"gzipped-2" * 1000]


def _fill_with_transactions(settings: dict[str, Any], topic: str) -> None:
    """Plain records, a committed transaction, an aborted one, gzipped records, then a plain one again."""
    plain = KafkaProducer(**settings)
    gzipped = KafkaProducer(**settings, compression_type="gzip")
    tx = KafkaProducer(**settings, transactional_id=f"bq-test-{uuid.uuid4().hex[:8]}")
    try:
        plain.send(topic, b"before", key=b"k", headers=[("h", b"v"), ("empty", b"")]).get(10)
        plain.send(topic, None, key=b"k").get(10)  # a tombstone
        tx.init_transactions()
        tx.begin_transaction()
        tx.send(topic, b"committed-1", key=b"k")
        tx.send(topic, b"committed-2", key=b"k")
        tx.commit_transaction()
        tx.begin_transaction()
        tx.send(topic, b"aborted", key=b"k")
        tx.flush()  # written to the log, then aborted (unflushed records would just be dropped)
        tx.abort_transaction()
        _wait_for_log_end(settings, topic, 7)  # the coordinator writes the abort marker after abort returns
        gzipped.send(topic, b"gzipped-1", key=b"k", headers=[("h", b"\xff" * 300)])
        gzipped.send(topic, b"gzipped-2" * 1000, key=b"k").get(10)
        plain.send(topic, b"after", key=b"k").get(10)
    finally:
        tx.close()
        gzipped.close()
        plain.close()


def _wait_for_log_end(settings: dict[str, Any], topic: str, offsets: int) -> None:
    """Until the topic's log holds ``offsets`` offsets (records and transaction markers)."""
    consumer = KafkaConsumer(**settings)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        deadline = time.monotonic() + 15
        while sum(consumer.end_offsets(partitions).values()) < offsets:
            assert time.monotonic() < deadline, "the abort marker never reached the log"
            time.sleep(0.05)
    finally:
        consumer.close()


def _read_all(settings: dict[str, Any], topic: str, lean_path: bool, **config: Any) -> list[LeanRecord]:
    consumer = KafkaConsumer(topic, **settings, auto_offset_reset="earliest", enable_auto_commit=False, **config)
    try:
        if lean_path:
            assert install(consumer)
        got: list[LeanRecord] = []
        for _ in range(100):
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(records if lean_path else map(lean, records))
            if got and got[-1][2] == b"after":
                return got
        raise AssertionError(f"never read to the end: {got}")
    finally:
        consumer.close(autocommit=False)


def test_lean_records_match_kafka_pythons_own(broker, topic, settings) -> None:
    broker.declare(topic)
    _fill_with_transactions(settings, topic)
    own = _read_all(settings, topic, lean_path=False)
    leaned = _read_all(settings, topic, lean_path=True)
    assert all(type(record) is tuple for record in leaned)
    assert leaned == own
    bodies = [value for _, _, value, _ in leaned]
    assert bodies == [b"before", None, b"committed-1", b"committed-2", b"aborted", *GZIPPED, b"after"]  # no markers
    assert leaned[0][3] == [("h", b"v"), ("empty", b"")]
    offsets = {value: offset for offset, _, value, _ in leaned}
    assert offsets[b"gzipped-1"] > offsets[b"aborted"] + 1  # the abort marker's offset lies between: stepped over


def test_read_committed_keeps_kafka_pythons_filtering(broker, topic, settings) -> None:
    """Aborted-transaction filtering is kafka-python's own; the lean hook converts its records."""
    broker.declare(topic)
    _fill_with_transactions(settings, topic)
    own = _read_all(settings, topic, lean_path=False, isolation_level="read_committed")
    leaned = _read_all(settings, topic, lean_path=True, isolation_level="read_committed")
    assert leaned == own
    assert b"aborted" not in [value for _, _, value, _ in leaned]


def test_members_read_past_control_batches_and_commit_to_the_end(broker, topic, settings) -> None:
    broker.declare(topic, "g")
    _fill_with_transactions(settings, topic)
    with broker.subscribe(topic, "g") as sub:
        got = collect(sub, 8)
    assert [d.body for d in got] == [b"before", b"", b"committed-1", b"committed-2", b"aborted", *GZIPPED, b"after"]
    assert got[0].headers == {"h": "v", "empty": ""}
    assert broker.depth(topic, "g") == 0  # the commit reaches past the last marker
