"""Records straight into a KafkaProducer's accumulator, for publish's batches.

``KafkaProducer.send`` checks and computes, for every record, what ``publish``
has settled once for the whole batch: bytes values and headers, the topic's
metadata, the partition, the size against the broker's limit (the core refuses
larger messages before anything is sent). What is left of ``send`` is adding the
record to the accumulator and waking the sender: this does that, and nothing
else. It is kafka-python's internals, so the extra pins kafka-python's minor
version; with a producer without them (or a transactional one) ``publish``
sends through ``send``.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer, TopicPartition

Headers = list[tuple[str, bytes]]


class Appender:
    """Adds ``publish``'s records to a producer's accumulator; :meth:`done` once the batch is in.

    It wakes the producer's sender when a batch starts behind a full one (``send`` wakes it for
    every record while the full one waits: each wake hands the GIL over, costing this thread as
    much as the append), and once more at the end, so that the last batch does not wait for
    linger_ms.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self._append = producer._accumulator.append
        self._wakeup = producer._sender.wakeup

    @staticmethod
    def usable(producer: KafkaProducer) -> bool:
        """Whether ``producer`` has the internals this needs (and is not transactional)."""
        transactions = getattr(producer, "_transaction_manager", None)
        return (
            hasattr(producer, "_accumulator")
            and hasattr(producer, "_sender")
            and (transactions is None or not transactions.is_transactional())
        )

    def add(self, tp: TopicPartition, key: bytes | None, value: bytes, headers: Headers) -> Any:
        """Add one record; its future."""
        future, batch_full, batch_new, _ = self._append(tp, None, key, value, headers)
        if batch_new and batch_full:
            self._wakeup()  # the batch before it is full and can go now
        return future

    def done(self) -> None:
        """The last batch goes now, without waiting for linger_ms."""
        self._wakeup()
