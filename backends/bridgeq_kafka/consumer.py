"""One member of a Kafka consumer group: manual commits of the contiguous-ack watermark only."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import count, groupby
from operator import attrgetter, itemgetter
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from bridgeq.message import EMPTY_HEADERS, MAX_ID_LENGTH
from bridgeq.spi import BackendConsumer, Delivery, translate_errors
from bridgeq.wire import ID_HEADER
from bridgeq_kafka.config import honour_retry_backoff
from bridgeq_kafka.errors import ERRORS, REBALANCING
from bridgeq_kafka.ledger import Ledger
from bridgeq_kafka.records import LeanRecord, install, lean

log = logging.getLogger("bridgeq.kafka")

Token = tuple[int, int]
"""A delivery's token: the slot of the ledger (one partition, one assignment) it came from, its offset.
Two ints, so the garbage collector stops tracking it at its first pass; acks group by the slot."""

_TOKEN = attrgetter("token")
_FIRST = itemgetter(0)  # a lean record's offset, a token's slot


class KafkaMember(BackendConsumer):
    """A KafkaConsumer subscribed to one topic, auto-commit off.

    Acks commit (synchronously, per ack batch) the watermark of each partition
    they touch. A requeued delivery waits in a local queue served before the next
    poll; its offset stays uncommitted meanwhile. When partitions are revoked the
    member commits what is safely acked and forgets them: later acks of their
    deliveries are ignored (the next owner delivers those messages again).

    Kafka only lets a member take part in a rebalance from inside ``poll``. The
    core stops fetching at the prefetch limit, and an application may work a
    while between receives, so a keeper thread polls with every partition paused
    whenever the member has been idle for a heartbeat interval: rebalances never
    wait for it. It stops after ``max_poll_interval_ms`` without any call from the
    application, and the member then leaves the group, as Kafka intends.
    """

    def __init__(
        self, config: dict[str, Any], kafka_topic: str, topic: str, group: str, close_ms: int, eager: bool
    ) -> None:
        self._topic = topic
        self.group_id: str = config["group_id"]
        self._eager = eager  # an eager assignor revokes every partition, then may give them back
        self._group = group
        self._close_ms = close_ms
        self._timeout_ms: int = config["request_timeout_ms"]  # for the waits kafka-python leaves unbounded
        self._context = f"reading {topic!r} as group {group!r}"
        self._ledgers: dict[TopicPartition, Ledger] = {}
        self._held: dict[int, tuple[TopicPartition, Ledger]] = {}  # slot -> each of _ledgers: tokens find theirs
        self._slots = count(1)
        self._redeliveries: deque[Delivery] = deque()
        self._parked: dict[TopicPartition, list[Any]] = {}  # records a keeper poll returned
        self._revoked: dict[TopicPartition, Ledger] = {}  # until the rebalance ends: given back, they go on
        self._lock = threading.RLock()  # the application's calls and the keeper's polls
        self._used = time.monotonic()  # the application's last call
        self._polled = self._used
        self._closed = threading.Event()
        with translate_errors(ERRORS, f"joining group {group!r} on {topic!r}"):
            self._consumer = honour_retry_backoff(KafkaConsumer(**config), config)
            self._lean = install(self._consumer)  # records come as (offset, key, value, headers) tuples
            try:
                self._consumer.subscribe([kafka_topic], listener=_Listener(self))
                # Join knowing the topic's partitions: a first join without them assigns nothing and rejoins
                # when they arrive, and kafka-python 3.0 can lose that second join's result when polls are
                # short (the leader then sits unassigned until its session times out).
                self._await_partitions(kafka_topic)
            except BaseException:
                self._consumer.close(autocommit=False, timeout_ms=close_ms)
                raise
        self._every = config["heartbeat_interval_ms"] / 1000
        self._patience = config["max_poll_interval_ms"] / 1000
        threading.Thread(target=self._keep, name=f"bridgeq-kafka-keeper-{group}", daemon=True).start()

    def _await_partitions(self, kafka_topic: str) -> None:
        """Wait, at most request_timeout_ms, for the topic's partitions in the consumer's metadata.
        (kafka-python's partitions_for_topic waits without a limit, and a consumer given api_version
        bootstraps without one: a broker unreachable as the member was made hung it for good.)"""
        consumer: Any = self._consumer
        cluster = consumer._manager.cluster  # kafka-python's internals (pinned minor version)
        if cluster.partitions_for_topic(kafka_topic) is None:
            consumer._net.run(consumer._manager.wait_for, cluster.request_update(), self._timeout_ms)

    def _keep(self) -> None:
        """Poll, partitions paused, while the application is busy elsewhere (see the class doc)."""
        while not self._closed.wait(self._every):
            now = time.monotonic()
            if now - self._polled < self._every or now - self._used > self._patience:
                continue
            if not self._lock.acquire(blocking=False):
                continue
            try:
                if self._closed.is_set():
                    return
                paused = self._consumer.assignment()
                self._consumer.pause(*paused)
                try:
                    for tp, records in self._consumer.poll(timeout_ms=50).items():
                        self._parked.setdefault(tp, []).extend(records)  # assigned during this poll
                finally:
                    self._consumer.resume(*(paused & self._consumer.assignment()))
                self._polled = time.monotonic()
            except Exception as exc:  # the application's next call meets the problem itself
                log.debug("%s: keeper poll failed: %r", self._context, exc)
            finally:
                self._lock.release()

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
                if delivery.token[0] in self._held:  # not revoked meanwhile
                    out.append(delivery)
            if out:
                return out
            with translate_errors(ERRORS, self._context):
                if self._parked:
                    polled = self._unpark(max_messages)
                else:
                    polled = self._consumer.poll(timeout_ms=max(int(timeout * 1000), 0), max_records=max_messages)
                    self._polled = time.monotonic()
                try:  # a partition new to this member: its group's commit first, before any of it is delivered
                    for tp in [tp for tp, records in polled.items() if records and tp not in self._ledgers]:
                        self._open(tp)
                except BaseException:
                    for tp, records in polled.items():  # back to the head of the line for the next fetch
                        self._parked[tp] = records + self._parked.get(tp, [])
                    raise
                for tp, records in polled.items():
                    if records:
                        if not self._lean:
                            records = list(map(lean, records))
                        ledger = self._ledgers[tp]
                        self._deliveries(tp, ledger, records, ledger.deliver_all(list(map(_FIRST, records))), out)
            return out

    def _unpark(self, limit: int) -> dict[TopicPartition, list[Any]]:
        taken: dict[TopicPartition, list[Any]] = {}
        for tp in list(self._parked):
            records = self._parked.pop(tp)
            taken[tp], rest = records[:limit], records[limit:]
            if rest:
                self._parked[tp] = rest
            limit -= len(taken[tp])
            if not limit:
                break
        return taken

    def _open(self, tp: TopicPartition) -> Ledger:
        """A ledger for a partition just assigned, from the group's commit and its metadata."""
        committed = self._consumer.committed(tp, metadata=True, timeout_ms=self._timeout_ms)  # no limit by default
        if committed is None or committed.offset < 0:
            ledger = Ledger(None)
        else:
            ledger = Ledger(committed.offset, committed.metadata or "")
        ledger.slot = next(self._slots)
        self._hold(tp, ledger)
        return ledger

    def _hold(self, tp: TopicPartition, ledger: Ledger) -> None:
        self._ledgers[tp] = ledger
        self._held[ledger.slot] = (tp, ledger)

    def _drop(self, tp: TopicPartition) -> Ledger | None:
        ledger = self._ledgers.pop(tp, None)
        if ledger is not None:
            self._held.pop(ledger.slot, None)
        return ledger

    def _deliveries(
        self,
        tp: TopicPartition,
        ledger: Ledger,
        records: list[LeanRecord],
        attempts: list[int] | None,
        out: list[Delivery],
    ) -> None:
        """Append the deliveries of one partition's records to ``out``; an attempt of 0 skips the record,
        ``attempts`` None means all are first attempts. The hot path: one loop, no call per record, and
        ``records`` is emptied as it goes, each record freed once converted. The garbage collector runs
        every few hundred new objects, minus those freed: it then runs half as often."""
        topic, group, append, slot = self._topic, self._group, out.append, ledger.slot
        records.reverse()
        take = records.pop
        next_attempt = None if attempts is None else attempts[::-1].pop
        while records:
            offset, key, body, record_headers = take()
            attempt = 1 if next_attempt is None else next_attempt()
            if not attempt:
                continue
            message_id = ""
            headers: dict[str, str] | None = None  # bridgeq's own records mostly have none beyond the id
            for name, value in record_headers:
                text = "" if value is None else value.decode("utf-8", "replace")
                if name == ID_HEADER:
                    message_id = text
                elif headers is None:
                    headers = {name: text}
                else:
                    headers[name] = text
            if not (0 < len(message_id) <= MAX_ID_LENGTH and message_id.isprintable()):
                message_id = f"{tp.topic}-{tp.partition}-{offset}"  # a foreign record: its position
            append(
                Delivery(
                    message_id,
                    b"" if body is None else body,
                    headers or EMPTY_HEADERS,
                    None if key is None else key.decode("utf-8", "replace"),
                    topic,
                    group,
                    attempt,
                    (slot, offset),
                )
            )

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            self._used = time.monotonic()
            held = self._held
            touched: set[TopicPartition] = set()
            for slot, tokens in groupby(map(_TOKEN, deliveries), _FIRST):  # runs of one ledger: booked in bulk
                holding = held.get(slot)
                if holding is not None:  # not revoked meanwhile
                    holding[1].ack_all([offset for _, offset in tokens])
                    touched.add(holding[0])
            if touched:
                self._commit(touched)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            self._used = time.monotonic()
            for d in deliveries:
                token: Token = d.token
                slot, offset = token
                holding = self._held.get(slot)
                attempt = 0 if holding is None else holding[1].redeliver(offset)
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

    def commit_as_member(self, group_id: str, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        """Commit offsets of another topic as this member: a group with live members refuses outsiders."""
        with self._lock:
            if group_id != self.group_id or self._closed.is_set():
                return False
            try:
                self._consumer.commit(offsets)
            except Exception as exc:  # e.g. rebalancing: the caller falls back
                log.info("%s: could not commit for another topic (%s)", self._context, exc)
                return False
            return True

    def _release(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[Ledger, tuple[int, str]]]:
        """Take revoked partitions out of service; the commits that make what they acked stick."""
        points = {}
        for tp in partitions:
            self._parked.pop(tp, None)
            ledger = self._drop(tp)
            point = ledger.commit() if ledger is not None else None
            if ledger is not None:
                if self._eager:
                    self._revoked[tp] = ledger
                if point is not None:
                    points[tp] = (ledger, point)
        return points

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
                self._held.clear()
                self._redeliveries.clear()
                self._parked.clear()
                self._revoked.clear()
                with translate_errors(ERRORS, f"leaving group {self._group!r}"):
                    self._consumer.close(autocommit=False, timeout_ms=self._close_ms)


class _Listener(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's IO thread while the member's poll (or close) waits for it."""

    def __init__(self, member: KafkaMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        member = self._member
        points = member._release(revoked)
        if points:
            offsets = {tp: OffsetAndMetadata(point[0], point[1], -1) for tp, (_, point) in points.items()}
            try:
                await member._consumer.commit_async(offsets)
            except Exception as exc:
                log.info("%s: commit on revocation failed (%s); redelivered", member._context, exc)
            else:
                for ledger, point in points.values():
                    ledger.sent = point

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """A partition given back to its owner in the same rebalance (eager protocols revoke all first)
        keeps its ledger: nobody else read it meanwhile, and acks of deliveries out there still count.
        The others open lazily, from the group's commit, on their first record."""
        member = self._member
        for tp in assigned & member._revoked.keys():
            member._hold(tp, member._revoked[tp])
        member._revoked.clear()

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._member._release(lost)  # another member may own them already: commit nothing
        self._member._revoked.clear()
