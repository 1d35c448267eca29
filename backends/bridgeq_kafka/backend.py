"""The Kafka backend: topics, groups and publishing through kafka-python's producer and admin client."""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import kafka.errors as kx
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from bridgeq.errors import BridgeqError, ClosedError, ConfigError, ConnectionLost, PublishError
from bridgeq.spi import Backend, BackendConsumer, BrokerURL, Capabilities, Message, Totals, translate_errors
from bridgeq.wire import ID_HEADER
from bridgeq_kafka.appender import Appender, forget, outcome
from bridgeq_kafka.config import client_config, honour_retry_backoff, raise_if_certificate_refused
from bridgeq_kafka.consumer import KafkaMember
from bridgeq_kafka.encoding import Record
from bridgeq_kafka.errors import ERRORS, REBALANCING
from bridgeq_kafka.ledger import acked_count
from bridgeq_kafka.options import KafkaOptions

T = TypeVar("T")
ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}


class KafkaBackend(Backend):
    """``kafka://host:port[,host:port...]``: one producer and one admin client, made on first use."""

    options_type = KafkaOptions

    def __init__(self, url: BrokerURL, options: object) -> None:
        assert isinstance(options, KafkaOptions)
        self._options = options
        self._common = client_config(url, options)  # holds the password: never logged or shown
        self._frame = max(1 << 20, options.max_message_size + (64 << 10))
        self.capabilities = Capabilities(
            consumer_groups=True,
            persistent=True,
            replay=options.group_start == "earliest",
            ordered_per_key=options.acks == "all",  # idempotent producer: retries cannot reorder
            crash_redelivery=True,
            crash_redelivery_seconds=(options.session_timeout_ms + options.heartbeat_interval_ms) / 1000 + 5,
            exact_delivery_count=False,
            depth=True,
            max_message_size=options.max_message_size,
            stable_foreign_ids=True,
        )
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._known: set[str] = set()  # topics this backend made sure exist
        self._partitioner = RunPartitioner()
        self._appender: Appender | None = None  # with the producer
        self._members: weakref.WeakSet[KafkaMember] = weakref.WeakSet()
        self._starts: dict[tuple[str, str], dict[TopicPartition, int]] = {}  # see _ensure_group
        self._api_version: tuple[int, ...] | None = None  # learnt from the first client: later ones skip a probe
        self._closed = False

    # -- clients, made on first use --------------------------------------------------------

    def _get_admin(self) -> KafkaAdminClient:
        with self._lock:
            if self._closed:
                raise ClosedError("the kafka backend is closed")
            if self._admin is None:
                with self._explained_bootstrap(), translate_errors(ERRORS, "connecting to Kafka"):
                    self._admin = honour_retry_backoff(KafkaAdminClient(**self._common), self._common)
            return self._admin

    @contextlib.contextmanager
    def _explained_bootstrap(self) -> Iterator[None]:
        """A bootstrap that fails over TLS says why when it is the certificate (kafka-python only logs it)."""
        try:
            yield
        except ConnectionLost:
            if "SSL" in self._common["security_protocol"]:
                raise_if_certificate_refused(self._common)
            raise

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._closed:
                raise ClosedError("the kafka backend is closed")
            if self._producer is None:
                with self._explained_bootstrap(), translate_errors(ERRORS, "connecting to Kafka"):
                    try:
                        self._producer = honour_retry_backoff(
                            KafkaProducer(**self._common, **self.producer_settings(), partitioner=self._partitioner),
                            self._common,
                        )
                        self._appender = Appender(self._producer) if Appender.usable(self._producer) else None
                        self._api_version = self._api_version or self._producer.config["api_version"]
                    except (ValueError, RuntimeError) as exc:  # e.g. a codec whose library is missing
                        raise ConfigError(f"kafka producer: {exc}") from exc
            return self._producer

    @property
    def options(self) -> KafkaOptions:
        return self._options

    def client_settings(self) -> dict[str, Any]:
        """kafka-python settings for any client of this broker: servers, timeouts, TLS, SASL (with the password)."""
        return dict(self._common)

    def producer_settings(self) -> dict[str, Any]:
        """The producer settings publishing uses, beyond :meth:`client_settings` (benchmarks reuse them)."""
        opts = self._options
        return {
            "acks": "all" if opts.acks == "all" else 1,
            "enable_idempotence": opts.acks == "all",
            "compression_type": None if opts.compression == "none" else opts.compression,
            "linger_ms": opts.linger_ms,
            "batch_size": opts.batch_size,
            "max_request_size": self._frame,
            "max_block_ms": opts.timeout_ms,
            "delivery_timeout_ms": opts.timeout_ms + opts.linger_ms,
        }

    def _name(self, name: str) -> str:
        return self._options.prefix + name

    def _retry(self, call: Callable[..., T], *args: Any) -> T:
        """An idempotent admin call, retried while the broker says "not now" (coordinator loading, ...)."""
        deadline = time.monotonic() + self._options.timeout_ms / 1000
        while True:
            try:
                return call(*args)
            except kx.RetriableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # -- topics and groups -----------------------------------------------------------------

    def declare(self, topic: str, group: str | None) -> None:
        with translate_errors(ERRORS, f"declaring {topic!r}" + (f" for group {group!r}" if group else "")):
            partitions = self._ensure_topic(self._name(topic))
            if group is not None:
                self._ensure_group(self._name(group), partitions)

    def _ensure_topic(self, name: str) -> list[TopicPartition]:
        """Create the topic unless it exists; its partitions once every one has a leader."""
        admin = self._get_admin()
        spec = {
            "num_partitions": self._options.partitions,
            "replication_factor": self._options.replication_factor or -1,
        }
        [result] = admin.create_topics({name: spec}, timeout_ms=self._options.timeout_ms, raise_errors=False)["topics"]
        if result["error_code"] not in (0, kx.TopicAlreadyExistsError.errno):
            raise kx.for_code(result["error_code"])(result.get("error_message") or name)
        deadline = time.monotonic() + self._options.timeout_ms / 1000
        while True:
            partitions = self._partitions(name)
            if partitions or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not partitions:
            raise kx.KafkaTimeoutError(f"topic {name!r} has no partition with a leader yet")
        self._known.add(name)
        return partitions

    def _partitions(self, name: str) -> list[TopicPartition]:
        """The topic's partitions, or [] while it is missing or any partition lacks a leader."""
        [info] = self._get_admin().describe_topics([name])
        parts = info.get("partitions") or []
        if info.get("error_code") or not parts or any(p["error_code"] or p["leader_id"] < 0 for p in parts):
            return []
        return [TopicPartition(name, p["partition_index"]) for p in parts]

    def _ensure_group(self, group_id: str, partitions: list[TopicPartition]) -> None:
        """Commit the group's start on a topic it has no commits on: from then on it gets every message.

        Kafka refuses an outsider's commit while the group has live members (a
        dead-letter topic is declared while its group works on the source topic):
        then one of this process's members of the group commits it, or, failing
        that, this process remembers the start for its next declare. With live
        members only elsewhere, the group reads the topic from its beginning.
        """
        admin = self._get_admin()
        key = (partitions[0].topic, group_id)
        committed = self._retry(admin.list_group_offsets, {group_id: partitions})[group_id]
        if any(offset.offset >= 0 for offset in committed.values()):
            self._starts.pop(key, None)
            return
        spec = OffsetSpec.EARLIEST if self._options.group_start == "earliest" else OffsetSpec.LATEST
        starts = self._starts.get(key) or {
            tp: o.offset for tp, o in self._retry(admin.list_partition_offsets, {tp: spec for tp in partitions}).items()
        }
        commits = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in starts.items()}
        errors = [e for e in self._retry(admin.alter_group_offsets, group_id, commits).values() if e is not kx.NoError]
        if errors and not all(issubclass(error, REBALANCING) for error in errors):
            raise errors[0](f"starting group {group_id!r}")
        if errors and not any(m.commit_as_member(group_id, commits) for m in list(self._members)):
            self._starts[key] = starts
        else:
            self._starts.pop(key, None)

    def delete(self, topic: str) -> None:
        name = self._name(topic)
        self._known.discard(name)
        if self._producer is not None:
            forget(self._producer, name)
        with translate_errors(ERRORS, f"deleting {topic!r}"):
            result = self._get_admin().delete_topics([name], timeout_ms=self._options.timeout_ms, raise_errors=False)
            code = result["topics"][0]["error_code"]
            if code not in (0, kx.UnknownTopicOrPartitionError.errno):
                raise kx.for_code(code)(name)

    # -- publishing ------------------------------------------------------------------------

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        self.begin_publish(topic, messages)()

    def prepare_publish(self, topic: str) -> None:
        """Start the producer and learn the topic's partitions: a first publish would wait for both."""
        name, producer = self._publishing(topic)
        with translate_errors(ERRORS, f"publishing to {topic!r}"):
            producer.partitions_for(name)

    def _publishing(self, topic: str) -> tuple[str, KafkaProducer]:
        """The topic's Kafka name and the producer, the topic made sure to exist."""
        name = self._name(topic)
        producer = self._get_producer()
        if name not in self._known:
            with translate_errors(ERRORS, f"publishing to {topic!r}"):
                self._ensure_topic(name)
        return name, producer

    def begin_publish(self, topic: str, messages: Sequence[Message]) -> Callable[[], None]:
        """Add the records to the producer's batches (the sender takes them from there); the function
        returned waits for their confirmations."""
        name, producer = self._publishing(topic)
        homes: list[Any] = []  # per record handed over: its batch (appender) or its future (send)
        unsent: BridgeqError | None = None
        appender, runs, run_length = self._appender, self._partitioner, RunPartitioner.RUN
        try:
            with translate_errors(ERRORS, f"publishing to {topic!r}"):
                ordered = sorted(producer.partitions_for(name))  # waits for the topic's metadata if new
                cluster = producer._metadata  # kafka-python's view of the cluster (pinned minor version)
                large = self._options.batch_size if appender is not None else 0  # these get send()'s checks
                tps = {p: TopicPartition(name, p) for p in ordered}
                now_ms = int(time.time() * 1000)
                run: list[Record] = []  # records for run_partition, not yet handed over
                run_partition, keyless, left, confirmed = -1, 0, 0, 0

                def hand_over() -> None:
                    """The run, to the appender (only ever filled when there is one)."""
                    if run:
                        homes.extend(appender.add(tps[run_partition], run, now_ms))  # type: ignore[union-attr]
                        run.clear()

                for message in messages:
                    headers = [(ID_HEADER, message.id.encode())]
                    if message.headers:
                        headers.extend((k, v.encode()) for k, v in message.headers.items())
                    key, body = message.key, message.body
                    serialized = None if key is None else key.encode()
                    if serialized is not None:
                        chosen = runs.keyed(serialized, ordered)
                    else:
                        if not left:
                            keyless, left = runs.next_run(name, cluster), run_length
                        left -= 1
                        chosen = keyless
                    if chosen != run_partition:
                        hand_over()
                        run_partition = chosen
                    if len(body) < large:
                        run.append((serialized, body, headers))
                        continue
                    hand_over()  # what came before it goes first
                    homes.append(producer.send(name, body, serialized, headers, chosen))
                    if not len(homes) % LET_GO_EVERY:
                        confirmed = _let_go(homes, confirmed)
                hand_over()
        except BridgeqError as exc:
            if not homes:
                raise
            unsent = exc
        finally:
            if appender is not None:
                appender.done()  # what was added goes now, sent or not the rest
        return functools.partial(self._confirm, topic, messages, homes, unsent)

    def _confirm(self, topic: str, messages: Sequence[Message], homes: list[Any], unsent: BaseException | None) -> None:
        """Wait for the records' batches or futures; PublishError naming the messages not confirmed (or never sent)."""
        wait = (self._options.timeout_ms + self._options.linger_ms) / 1000 + 5
        failed: list[str] = [m.id for m in messages[len(homes) :]]
        cause: BaseException | None = unsent
        last, error = None, None
        for message, home in zip(messages, homes, strict=False):
            if home is not last:
                last, error = home, None if home is None else outcome(home, wait)
            if error is not None:
                failed.append(message.id)
                cause = cause or error
        if failed:
            raise PublishError(
                f"publishing to {topic!r}: {len(failed)} of {len(messages)} message(s) not confirmed: "
                f"{type(cause).__name__}: {cause}",
                tuple(failed),
            ) from cause

    # -- consuming and counting ------------------------------------------------------------

    def consumer(self, topic: str, group: str, prefetch: int) -> BackendConsumer:
        self.declare(topic, group)
        opts = self._options
        config = dict(
            self._common,
            group_id=self._name(group),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only partitions the group has no commit on: added after it started
            session_timeout_ms=opts.session_timeout_ms,
            heartbeat_interval_ms=opts.heartbeat_interval_ms,
            max_poll_interval_ms=opts.max_poll_interval_ms,
            partition_assignment_strategy=[ASSIGNORS[opts.assignor]],
            max_partition_fetch_bytes=self._frame,
        )
        if self._api_version is not None:  # without it, a new consumer probes and waits ~100 ms more to join
            config["api_version"] = self._api_version
        member = KafkaMember(
            config,
            self._name(topic),
            topic,
            group,
            close_ms=min(opts.timeout_ms, 10000),
            eager=opts.assignor != "cooperative-sticky",
        )
        self._api_version = self._api_version or member.api_version
        self._members.add(member)
        return member

    def depth(self, topic: str, group: str) -> int | None:
        return sum(end - settled for end, settled in self._positions(topic, group))

    def totals(self, topic: str, group: str) -> Totals | None:
        positions = self._positions(topic, group)
        return Totals(sum(end for end, _ in positions), sum(settled for _, settled in positions))

    def _positions(self, topic: str, group: str) -> list[tuple[int, int]]:
        """(end offset, offsets settled by the group) per partition; partitions added later count from their start."""
        with translate_errors(ERRORS, f"reading the lag of group {group!r} on {topic!r}"):
            admin = self._get_admin()
            partitions = self._partitions(self._name(topic))
            if not partitions:
                return []
            committed = self._retry(admin.list_group_offsets, {self._name(group): partitions})[self._name(group)]
            known = {tp: c for tp, c in committed.items() if c.offset >= 0}
            ends = self._retry(admin.list_partition_offsets, {tp: OffsetSpec.LATEST for tp in partitions})
            if not known:  # the group was never declared on this topic: nothing waits for it
                return [(ends[tp].offset, ends[tp].offset) for tp in partitions]
            missing = [tp for tp in partitions if tp not in known]
            earliest = {tp: OffsetSpec.EARLIEST for tp in missing}
            starts = self._retry(admin.list_partition_offsets, earliest) if missing else {}
        positions = []
        for tp in partitions:
            end = ends[tp].offset
            mark = known[tp].offset + acked_count(known[tp].metadata or "") if tp in known else starts[tp].offset
            positions.append((end, min(mark, end)))
        return positions

    def close(self) -> None:
        with self._lock:
            self._closed = True
            producer, admin, self._producer, self._admin = self._producer, self._admin, None, None
        try:
            if producer is not None:
                producer.close(timeout=self._options.timeout_ms / 1000)
        finally:
            if admin is not None:
                admin.close()


class RunPartitioner(Partitioner):
    """A keyed record goes where Kafka's default (Java's too) puts it: murmur2 of the key. Keyless
    records go in runs of ``RUN`` to one partition with a leader, then the next: full batches, and
    no per-record choice (kafka-python's default picks at random for every record).

    ``publish`` chooses itself, with ``next_run`` and ``keyed``, and names the partition in each
    send; kafka-python calls ``partition`` only for records sent without one."""

    RUN = 256

    def __init__(self) -> None:
        self._runs = itertools.count()
        self._calls = itertools.count()
        self._current: dict[str, int] = {}  # topic -> partition of its current run

    def next_run(self, topic: str, cluster: Any) -> int:
        """The partition for the next ``RUN`` keyless records of ``topic``."""
        ordered = sorted(cluster.available_partitions_for_topic(topic) or cluster.partitions_for_topic(topic))
        return ordered[next(self._runs) % len(ordered)]

    @staticmethod
    def keyed(serialized_key: bytes, ordered: Sequence[int]) -> int:
        """The partition of a keyed record, among the topic's partitions in order."""
        return ordered[(murmur2(serialized_key) & 0x7FFFFFFF) % len(ordered)]

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        if serialized_key is not None:
            return self.keyed(serialized_key, sorted(cluster.partitions_for_topic(topic)))
        starts_run = not next(self._calls) % self.RUN
        current = self._current.get(topic)
        if current is None or starts_run:
            current = self._current[topic] = self.next_run(topic, cluster)
        return current


LET_GO_EVERY = 1024
"""Records sent through ``send`` between two passes of :func:`_let_go` in a big publish."""


def _let_go(futures: list[Any], start: int) -> int:
    """Replace the confirmed futures at the head of ``futures[start:]`` by None; where the rest begins.

    A big batch would otherwise keep every finished future alive until its end: the garbage
    collector scans them again and again and moves them to its oldest generation, whose growth
    starts full collections. Confirmations mostly come in sending order (one connection per
    broker), so the head is where they are; a failed one stops the pass and is reported at the end.
    """
    end = len(futures)
    while start < end:
        future = futures[start]
        if not future.is_done or future.exception is not None:
            break
        futures[start] = None
        start += 1
    return start
