"""One member of a Kafka consumer group: manual commits of the contiguous-ack watermark only."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from bridgeq.message import MAX_ID_LENGTH
from bridgeq.spi import BackendConsumer, Delivery, translate_errors
from bridgeq.wire import ID_HEADER
from bridgeq_kafka.errors import ERRORS, REBALANCING
from bridgeq_kafka.ledger import Ledger

log = logging.getLogger("bridgeq.kafka")

Token = tuple[TopicPartition, Ledger, int]
"""A delivery's token: its partition, the ledger of the assignment it came from, its offset."""


class KafkaMember(BackendConsumer):
    """A KafkaConsumer subscribed to one topic, auto-commit off.

    Acks commit (synchronously, per ack batch) the watermark of each partition
    they touch. A requeued delivery waits in a local queue served before the next
    poll; its offset stays uncommitted meanwhile. When partitions are revoked the
    member commits what is safely acked and forgets them: later acks of their
    deliveries are ignored (the next owner delivers those messages again).
    """

    def __init__(self, config: dict[str, Any], kafka_topic: str, topic: str, group: str, close_ms: int) -> None:
        self._topic = topic
        self._group = group
        self._close_ms = close_ms
        self._context = f"reading {topic!r} as group {group!r}"
        self._ledgers: dict[TopicPartition, Ledger] = {}
        self._redeliveries: deque[Delivery] = deque()
        self._closed = False
        with translate_errors(ERRORS, f"joining group {group!r} on {topic!r}"):
            self._consumer = KafkaConsumer(**config)
            self._consumer.subscribe([kafka_topic], listener=_Listener(self))

    @property
    def api_version(self) -> tuple[int, ...]:
        """The protocol level the client settled on with the broker."""
        return tuple(self._consumer.config["api_version"])

    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        with self._lock:
            self._used = time.monotonic()
            out: list[Delivery] = []
            while self._redeliveries and len(out) < max_messages:
                delivery = self._redeliveries.popleft()
                tp, ledger, _ = delivery.token
                if self._ledgers.get(tp) is ledger:  # not revoked meanwhile
                    out.append(delivery)
            if out:
                return out
            with translate_errors(ERRORS, self._context):
                if self._parked:
                    polled, self._parked = self._parked, {}
                else:
                    polled = self._consumer.poll(timeout_ms=max(int(timeout * 1000), 0), max_records=max_messages)
                    self._polled = time.monotonic()
                for tp, records in polled.items():
                    ledger = self._ledgers.get(tp) or self._open(tp)
                    for record in records:
                        attempt = ledger.deliver(record.offset)
                        if attempt:
                            out.append(self._delivery(tp, ledger, record, attempt))
            return out

    def _open(self, tp: TopicPartition) -> Ledger:
        """A ledger for a partition just assigned, from the group's commit and its metadata."""
        committed = self._consumer.committed(tp, metadata=True)
        if committed is None or committed.offset < 0:
            ledger = Ledger(None)
        else:
            ledger = Ledger(committed.offset, committed.metadata or "")
        self._ledgers[tp] = ledger
        return ledger

    def _delivery(self, tp: TopicPartition, ledger: Ledger, record: Any, attempt: int) -> Delivery:
        message_id = ""
        headers: dict[str, str] = {}
        for name, value in record.headers or ():
            text = value.decode("utf-8", "replace") if value is not None else ""
            if name == ID_HEADER:
                message_id = text
            else:
                headers[name] = text
        if not 0 < len(message_id) <= MAX_ID_LENGTH or not message_id.isprintable():
            message_id = f"{tp.topic}-{tp.partition}-{record.offset}"  # a foreign record: its position
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        body = record.value if record.value is not None else b""
        token: Token = (tp, ledger, record.offset)
        return Delivery(message_id, body, headers, key, self._topic, self._group, attempt, token)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            self._used = time.monotonic()
            touched: set[TopicPartition] = set()
            for delivery in deliveries:
                token: Token = delivery.token
                tp, ledger, offset = token
                if self._ledgers.get(tp) is ledger:
                    ledger.ack(offset)
                    touched.add(tp)
            if touched:
                self._commit(touched)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            self._used = time.monotonic()
            for d in deliveries:
                token: Token = d.token
                tp, ledger, offset = token
                attempt = ledger.redeliver(offset) if self._ledgers.get(tp) is ledger else 0
                if attempt:
                    self._redeliveries.append(
                        Delivery(d.id, d.body, d.headers, d.key, d.topic, d.group, attempt, d.token)
                    )

    def _commit(self, partitions: Iterable[TopicPartition]) -> None:
        points = {}
        for tp in partitions:
            ledger = self._ledgers.get(tp)
            point = ledger.commit() if ledger is not None else None
            if ledger is not None and point is not None:
                points[tp] = (ledger, point)
        if not points:
            return
        offsets = {tp: OffsetAndMetadata(point[0], point[1], -1) for tp, (_, point) in points.items()}
        with translate_errors(ERRORS, f"committing acks of {self._topic!r} for group {self._group!r}"):
            try:
                self._consumer.commit(offsets)
            except REBALANCING as exc:  # the partitions move on; their next owner redelivers
                log.info("%s: commit refused during a rebalance (%s); unsent acks are redelivered", self._context, exc)
                return
        for ledger, point in points.values():
            ledger.sent = point

    def _release(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Forget revoked partitions; the commits that make what they acked stick."""
        offsets = {}
        for tp in partitions:
            self._parked.pop(tp, None)
            ledger = self._ledgers.pop(tp, None)
            point = ledger.commit() if ledger is not None else None
            if point is not None:
                offsets[tp] = OffsetAndMetadata(point[0], point[1], -1)
        return offsets

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            try:
                self._commit(list(self._ledgers))
            except Exception as exc:  # at-least-once: what was not committed is delivered again
                log.warning("%s: final commit failed (%s); its acks will be redelivered", self._context, exc)
            finally:
                self._ledgers.clear()
                self._redeliveries.clear()
                self._parked.clear()
                with translate_errors(ERRORS, f"leaving group {self._group!r}"):
                    self._consumer.close(autocommit=False, timeout_ms=self._close_ms)


class _Listener(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's IO thread while the member's poll (or close) waits for it."""

    def __init__(self, member: KafkaMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self._member._release(revoked)
        if offsets:
            try:
                await self._member._consumer.commit_async(offsets)
            except Exception as exc:
                log.info("%s: commit on revocation failed (%s); redelivered", self._member._context, exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass  # ledgers open lazily, with the group's commit, on the first record

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._member._release(lost)  # another member owns them already: commit nothing
