"""Records straight into a KafkaProducer's accumulator, for publish's batches.

``KafkaProducer.send`` checks and computes, for every record, what ``publish``
has settled once for the whole batch: bytes values and headers, the topic's
metadata, the partition, the size against the broker's limit (the core refuses
larger messages before anything is sent). What is left of ``send`` is adding the
record to the accumulator and waking the sender when a batch fills or starts:
this does that, and nothing else. It is kafka-python's internals, so the extra
pins kafka-python's minor version; a producer without them (or a transactional
one) gets None, and ``publish`` sends through ``send``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer, TopicPartition

Headers = list[tuple[str, bytes]]
Append = Callable[[TopicPartition, "bytes | None", bytes, Headers], Any]


def appender(producer: KafkaProducer) -> Append | None:
    """A function adding one record to ``producer``'s accumulator and returning its future; None where it cannot."""
    accumulator = getattr(producer, "_accumulator", None)
    sender = getattr(producer, "_sender", None)
    transactions = getattr(producer, "_transaction_manager", None)
    if accumulator is None or sender is None or (transactions is not None and transactions.is_transactional()):
        return None
    append, wakeup = accumulator.append, sender.wakeup

    def add(tp: TopicPartition, key: bytes | None, value: bytes, headers: Headers) -> Any:
        future, batch_full, batch_new, _ = append(tp, None, key, value, headers)
        if batch_full or batch_new:
            wakeup()  # as send() does: a full batch can go now, a new one starts its linger
        return future

    return add
