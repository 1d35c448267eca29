"""Records straight into a KafkaProducer's batches, for publish's runs of records.

``KafkaProducer.send`` checks and computes, for every record, what ``publish``
has settled once for the whole batch: bytes values and headers, the topic's
metadata, the partition, the size against the broker's limit (the core refuses
larger messages before anything is sent). Its accumulator then takes a lock and
makes a future for every record, whose result ``publish`` only needs per batch.
Here a run of records bound for one partition goes into that partition's
batches under one lock per batch, and each record is answered with the batch
it went into: the batch's own future confirms it. Records are encoded into a
batch by :func:`bridgeq_kafka.encoding.fill`, not its builder's ``append``. The
batches are kafka-python's own, made as its accumulator makes them, so its
sender drains, retries and expires them as usual. It is kafka-python's internals, so the extra pins
kafka-python's minor version; a producer without them (or a transactional one)
publishes through ``send``.

A batch the broker refuses as too large (a topic whose ``max.message.bytes`` is
below ``batch_size``) is split by kafka-python, which then answers only per-record
futures, and these records have none: :class:`Appender` completes the batch
itself once its halves are confirmed (or one fails).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

import kafka.errors as kx
from kafka import KafkaProducer, TopicPartition
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder

from bridgeq_kafka.encoding import Record, fill


class Appender:
    """Adds ``publish``'s records to a producer's batches; :meth:`done` once they are all in.

    It wakes the producer's sender when a batch starts behind a full one (``send`` wakes it for
    every record while the full one waits: each wake hands the GIL over), and once more at the
    end, so that the last batch does not wait for linger_ms.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self._accumulator = accumulator = producer._accumulator
        self._wakeup = producer._sender.wakeup
        config = accumulator.config
        self._builder = (config["message_version"], config["compression_attrs"], config["batch_size"])
        split = accumulator.split_and_reenqueue

        def split_and_answer(batch: ProducerBatch, now: float | None = None) -> int:
            count: int = split(batch, now)
            with accumulator._tp_lock(batch.topic_partition):  # the halves are at the front, in order
                halves = list(itertools.islice(accumulator._batches[batch.topic_partition], count))
            answer_when_split(batch.produce_future, halves)
            return count

        accumulator.split_and_reenqueue = split_and_answer  # called on the sender's thread, which drains too

    @staticmethod
    def usable(producer: KafkaProducer) -> bool:
        """Whether ``producer`` has the internals this needs (and is not transactional)."""
        transactions = getattr(producer, "_transaction_manager", None)
        accumulator = getattr(producer, "_accumulator", None)
        return (
            accumulator is not None
            and hasattr(accumulator, "_batches")
            and hasattr(producer, "_sender")
            and hasattr(accumulator, "split_and_reenqueue")
            and accumulator.config.get("message_version") == 2  # the record format fill() writes
            and (transactions is None or not transactions.is_transactional())
        )

    def add(self, tp: TopicPartition, records: Sequence[Record], timestamp_ms: int) -> list[ProducerBatch]:
        """Add ``records`` in order to the batches of ``tp``; the batch each went into."""
        accumulator, homes = self._accumulator, list[ProducerBatch]()
        done, end = 0, len(records)
        accumulator._appends_in_progress.increment()  # as accumulator.append does: abort waits for it
        try:
            while done < end:
                with accumulator._tp_lock(tp):
                    if accumulator._closed:
                        raise kx.IllegalStateError("the producer is closed")
                    batches = accumulator._batches[tp]
                    batch = batches[-1] if batches else None
                    into = done if batch is None else fill(batch.records, records, done, timestamp_ms)
                    behind = False
                    if into == done:  # no room left in the last batch (or none): a new one
                        batch = ProducerBatch(tp, MemoryRecordsBuilder(*self._builder), time.monotonic())
                        into = fill(batch.records, records, done, timestamp_ms)  # at least one: it is empty
                        batches.append(batch)
                        accumulator._incomplete.add(batch)
                        behind = len(batches) > 1
                    homes += [batch] * (into - done)
                    done = into
                if behind:
                    self._wakeup()  # the batch before it is full and can go now
        finally:
            accumulator._appends_in_progress.decrement()
        return homes

    def done(self) -> None:
        """The last batch goes now, without waiting for linger_ms."""
        self._wakeup()


def answer_when_split(future: Any, halves: Sequence[ProducerBatch]) -> None:
    """Complete the ``future`` of a batch kafka-python split into ``halves``: once all are confirmed,
    or as the first fails (a record error is the batch's, as :func:`outcome` reads it)."""
    left = len(halves)
    lock = threading.Lock()

    def settled(error: BaseException | None) -> None:
        nonlocal left
        with lock:
            left -= 1
            if future.is_done:
                return
            if error is not None:
                future.failure(error)
            elif not left:
                future.success((-1, -1, None))

    for half in halves:
        half.produce_future.add_callback(lambda value: settled(None if value[2] is None else value[2](0)))
        half.produce_future.add_errback(settled)


def forget(producer: KafkaProducer, topic: str) -> None:
    """Drop a deleted topic's empty partition queues and its metadata from ``producer``. kafka-python
    keeps both for good, and its sender, finding no leader for those partitions, then asks for the
    cluster's metadata on every pass: a consumer on the same broker object read 3-4x slower after a
    topic it had published to was deleted."""
    accumulator = getattr(producer, "_accumulator", None)
    batches = getattr(accumulator, "_batches", None)
    if accumulator is None or batches is None:
        return
    for tp in [tp for tp in list(batches) if tp.topic == topic]:
        with accumulator._tp_lock(tp):
            if not batches[tp]:
                del batches[tp]
    topics = getattr(producer._metadata, "_topics", None)
    if isinstance(topics, set):
        topics.discard(topic)


def outcome(home: Any, wait: float) -> BaseException | None:
    """What became of a record: None once confirmed, else why not (waiting at most ``wait`` seconds).
    ``home`` is its batch (from :meth:`Appender.add`) or its future (from ``send``)."""
    if type(home) is not ProducerBatch:
        try:
            home.get(timeout=wait)
        except Exception as exc:
            return exc
        return None
    future = home.produce_future
    if not future.is_done and not future.wait(wait):
        return kx.KafkaTimeoutError(f"no confirmation of a batch for {home.topic_partition} in {wait:.0f} s")
    if future.failed():
        return future.exception
    record_errors = future.value[2]
    return None if record_errors is None else record_errors(0)
