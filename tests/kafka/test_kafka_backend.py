"""The Kafka backend against a real broker: wire layout, foreign records, commits, rebalances."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

import bridgeq
from bridgeq.testing.support import collect, quiet
from bridgeq.testing.targets import with_options
from bridgeq_kafka.backend import RunPartitioner
from bridgeq_kafka.ledger import decode


def committed(settings: dict, group: str, topic: str, partition: int = 0) -> tuple[int, str]:
    admin = KafkaAdminClient(**settings)
    try:
        found = admin.list_group_offsets({group: [TopicPartition(topic, partition)]})[group]
        offset = found[TopicPartition(topic, partition)]
        return offset.offset, offset.metadata or ""
    finally:
        admin.close()


def test_wire_layout_is_plain_kafka(broker, topic, settings) -> None:
    """Value = body, key = key, header ce_id = id, other headers as they are: readable by any client."""
    broker.declare(topic, "g")
    mid = broker.publish(topic, b"\x00body", headers={"type": "created", "ü": "ä"}, key="cust-7")
    consumer = KafkaConsumer(topic, **settings, auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        record = next(iter(consumer))
    finally:
        consumer.close()
    assert (record.value, record.key) == (b"\x00body", b"cust-7")
    assert dict(record.headers) == {"ce_id": mid.encode(), "type": b"created", "ü": "ä".encode()}


def test_foreign_records_are_read_with_their_position_as_id(broker, topic, settings) -> None:
    broker.declare(topic, "g")
    producer = KafkaProducer(**settings)
    try:
        first = producer.send(topic, b"plain", key=b"k1", headers=[("h", b"v"), ("bin", b"\xff\xfe")]).get(10)
        second = producer.send(topic, None, key=b"k1").get(10)  # a tombstone
        third = producer.send(topic, b"with id", key=b"k1", headers=[("ce_id", b"their-id-1")]).get(10)
    finally:
        producer.close()
    with broker.subscribe(topic, "g") as sub:
        got = collect(sub, 3, ack=False)
        [again] = [d for d in got if d.body == b"plain"]
        again.nack(requeue=True)
        [redelivered] = collect(sub, 1)
        for delivery in got:
            if delivery is not again:
                delivery.ack()
    by_body = {d.body: d for d in got}
    plain = by_body[b"plain"]
    assert plain.id == f"{topic}-{first.partition}-{first.offset}"
    assert (plain.key, plain.headers["h"], plain.headers["bin"]) == ("k1", "v", "\ufffd\ufffd")
    assert by_body[b""].id == f"{topic}-{second.partition}-{second.offset}"
    assert by_body[b"with id"].id == "their-id-1" and "ce_id" not in by_body[b"with id"].headers
    assert (redelivered.id, redelivered.attempt, redelivered.body) == (plain.id, 2, b"plain"), "stable id"
    assert third.partition == first.partition


def test_nack_requeue_redelivers_first_and_skips_nothing(broker, topic) -> None:
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [bridgeq.Message(f"m{i}", key="one") for i in range(6)])
    order: list[tuple[str, int]] = []
    with broker.subscribe(topic, "g", prefetch=1) as sub:
        while len({mid for mid, _ in order}) < 6 or len(order) < 7:
            delivery = sub.receive(timeout=10)
            assert delivery is not None
            order.append((delivery.id, delivery.attempt))
            if delivery.id == ids[2] and delivery.attempt == 1:
                delivery.nack(requeue=True)
            else:
                delivery.ack()
        assert quiet(sub, 0.5) == []
    assert order == [(ids[0], 1), (ids[1], 1), (ids[2], 1), (ids[2], 2), (ids[3], 1), (ids[4], 1), (ids[5], 1)]
    assert broker.depth(topic, "g") == 0


def test_out_of_order_acks_never_commit_past_an_unacked_message(kafka_url, topic, settings) -> None:
    broker = bridgeq.connect(with_options(kafka_url, partitions=1))
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(10)])
    with broker.subscribe(topic, "g") as sub:
        got = collect(sub, 10, ack=False)
        assert [d.id for d in got] == ids
        for delivery in reversed(got[5:]):
            delivery.ack()
        sub.flush()
        offset, metadata = committed(settings, "g", topic)
        assert offset == 0, "m0..m4 are not acked: the commit stays before m0"
        assert decode(offset, metadata)[0] == {5, 6, 7, 8, 9}
        assert broker.depth(topic, "g") == 5
    with broker.subscribe(topic, "g") as sub:
        again = collect(sub, 5) + quiet(sub, 0.5)
    assert [d.id for d in again] == ids[:5], "the acked five are not delivered again"
    assert {d.attempt for d in again} == {2}, "the attempt count travelled in the commit"
    assert committed(settings, "g", topic)[0] == 10
    assert broker.totals(topic, "g") == (10, 10)
    broker.close()


def test_acks_of_revoked_deliveries_are_not_committed_by_their_old_owner(kafka_url, topic, settings) -> None:
    """Member A holds 10 unacked; B joins and (sorting first) is given the partition: A's later acks are
    ignored, B gets the 10 again, and only B's acks move the commit."""
    one = with_options(kafka_url, partitions=1)
    with (
        bridgeq.connect(with_options(one, client_id="zz-old")) as a,
        bridgeq.connect(with_options(one, client_id="aa-new")) as b,
    ):
        a.declare(topic, "g")
        ids = a.publish_batch(topic, [f"m{i}" for i in range(10)])
        sub_a = a.subscribe(topic, "g")
        held = collect(sub_a, 10, ack=False)
        sub_b = b.subscribe(topic, "g")
        stop = threading.Event()
        polling = threading.Thread(target=lambda: [sub_a.receive(timeout=0.1) for _ in iter(stop.is_set, True)])
        polling.start()
        try:
            moved = collect(sub_b, 10, ack=False)
        finally:
            stop.set()
            polling.join()
        assert sorted(d.id for d in moved) == sorted(ids)
        for delivery in held:
            delivery.ack()
        sub_a.flush()
        assert committed(settings, "g", topic)[0] == 0, "A no longer owns the partition: its acks do not count"
        for delivery in moved:
            delivery.ack()
        sub_b.flush()
        assert committed(settings, "g", topic)[0] == 10
        sub_a.close()
        sub_b.close()


def test_a_group_busy_elsewhere_still_gets_a_topic_declared_meanwhile(kafka_url, broker, topic) -> None:
    """Declaring a new topic for a group with live members (dead letters do) loses nothing, even for
    another process that subscribes later: a member of the group commits the start."""
    other = f"{topic}.g.dlq"  # deleted by the fixture
    broker.declare(topic, "g")
    broker.publish(topic, b"x")
    before = broker.publish(other, b"before the group came to this topic")
    with broker.subscribe(topic, "g") as busy:
        collect(busy, 1)
        broker.declare(other, "g")
        mid = broker.publish(other, b"for g")
    with bridgeq.connect(kafka_url) as elsewhere, elsewhere.subscribe(other, "g") as sub:
        got = [d.id for d in collect(sub, 1) + quiet(sub, 0.5)]
    assert got == [mid] and before not in got


def test_depth_and_totals_follow_publish_and_ack(broker, topic) -> None:
    assert broker.depth(topic, "nobody") == 0
    broker.declare(topic, "g")
    broker.publish(topic, b"before")  # the group exists: it waits
    assert broker.depth(topic, "g") == 1
    late = f"late-{uuid.uuid4().hex[:6]}"
    broker.declare(topic, late)
    assert broker.depth(topic, late) == 0, "a group starts at declare: no replay"
    broker.publish_batch(topic, ["a", "b"])
    assert (broker.depth(topic, "g"), broker.depth(topic, late)) == (3, 2)
    with broker.subscribe(topic, "g") as sub:
        collect(sub, 3)
    assert broker.depth(topic, "g") == 0
    assert broker.totals(topic, "g") == (3, 3)


def test_publishing_to_a_topic_nobody_declared_creates_it(broker, topic) -> None:
    broker.publish(topic, b"first")  # no group yet: nobody will read it
    broker.declare(topic, "g")
    mid = broker.publish(topic, b"second")
    with broker.subscribe(topic, "g") as sub:
        assert [d.id for d in collect(sub, 1) + quiet(sub, 0.5)] == [mid]


def test_a_consumer_joins_fast(broker, topic) -> None:
    broker.declare(topic, "g")
    broker.publish(topic, b"x")
    with broker.subscribe(topic, "g"):
        pass  # the first consumer of a backend learns the protocol version
    broker.declare(topic, "g2")
    broker.publish(topic, b"y")
    started = time.monotonic()
    with broker.subscribe(topic, "g2") as sub:
        assert sub.receive(timeout=10) is not None
        took = time.monotonic() - started
    assert took < 2.0, f"join to first record took {took:.2f} s"


@pytest.mark.parametrize("count", [1, 2500])
def test_publish_batch_is_confirmed_and_readable(broker, topic, count) -> None:
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(count)])
    assert broker.depth(topic, "g") == count
    with broker.subscribe(topic, "g", prefetch=500) as sub:
        assert sorted(d.id for d in collect(sub, count)) == sorted(ids)


def test_batches_begun_in_turn_are_confirmed_and_delivered_in_that_order(broker, topic) -> None:
    broker.declare(topic, "g")
    first = broker.begin_batch(topic, [bridgeq.Message(f"a{i}", key="k") for i in range(500)])
    second = broker.begin_batch(topic, [bridgeq.Message(f"b{i}", key="k") for i in range(500)])
    ids = first() + second()  # both handed over before either is confirmed
    assert len(ids) == 1000 and broker.begin_batch(topic, [])() == []
    with broker.subscribe(topic, "g", prefetch=500) as sub:
        assert [d.id for d in collect(sub, 1000)] == ids, "one key, one partition: the order they were begun in"


def test_published_records_land_on_kafkas_key_partition_and_keyless_ones_in_runs(broker, topic, settings) -> None:
    """publish names each record's partition itself: keys where Kafka's default partitioner puts them."""
    broker.declare(topic, "g")  # 3 partitions by default
    keyed = broker.publish_batch(topic, [bridgeq.Message(f"k{i}".encode(), key=f"customer-{i}") for i in range(60)])
    keyless = broker.publish_batch(topic, [b"x"] * (RunPartitioner.RUN * 3))
    consumer = KafkaConsumer(topic, **settings, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        records = {dict(r.headers)["ce_id"].decode(): r for r in consumer}
    finally:
        consumer.close()
    assert len(records) == len(keyed) + len(keyless)
    partitions = {0, 1, 2}
    for mid in keyed:
        record = records[mid]
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 3, record.key  # Java's default
    runs = [records[mid].partition for mid in keyless]
    chunks = [runs[i : i + RunPartitioner.RUN] for i in range(0, len(runs), RunPartitioner.RUN)]
    assert [len(set(chunk)) for chunk in chunks] == [1, 1, 1]
    assert {chunk[0] for chunk in chunks} == partitions


def test_a_batch_mixing_small_and_batch_sized_messages_keeps_their_order(broker, topic) -> None:
    """Small records go straight to the producer's accumulator, ones of batch_size or more through send()."""
    broker.declare(topic, "g")
    large = broker.backend.options.batch_size  # type: ignore[attr-defined]
    bodies = [b"a", b"B" * large, b"c", b"D" * (large * 3), b"e"]
    ids = broker.publish_batch(topic, [bridgeq.Message(body, key="same") for body in bodies])
    with broker.subscribe(topic, "g") as sub:
        got = collect(sub, len(bodies))
    assert [d.id for d in got] == ids and [d.body for d in got] == bodies


def test_a_deleted_topic_leaves_the_producer(broker, topic) -> None:
    """kafka-python's producer keeps a deleted topic's partitions; finding no leader for them, its sender
    would ask for the cluster's metadata on every pass (a consumer on the same broker read 3-4x slower)."""
    gone = f"{topic}-gone"
    broker.publish_batch(gone, [b"x"])
    broker.delete(gone)
    broker.publish_batch(topic, [b"y"])  # a metadata refresh: the deleted topic has no leaders now
    producer: Any = broker.backend._producer  # type: ignore[attr-defined]
    producer._metadata.request_update()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and producer._metadata._need_update:
        time.sleep(0.05)
    _, _, unknown_leaders = producer._accumulator.ready(producer._metadata)
    assert not unknown_leaders
    assert not [tp for tp in producer._accumulator._batches if tp.topic.endswith(gone)]


def test_every_client_keeps_the_retry_backoff_for_its_metadata(kafka_url, topic) -> None:
    """kafka-python 3.0 builds a client's metadata without its retry_backoff_ms (100 ms applies): the first
    publish to a topic waited out 100 ms from the bootstrap's metadata request. Each client bridgeq makes
    (admin, producer, consumer) has the configured backoff back."""
    with bridgeq.connect(with_options(kafka_url, retry_backoff_ms=7)) as broker:
        broker.declare(topic, "g")
        broker.publish_batch(topic, [b"x"])
        backend: Any = broker.backend
        with broker.subscribe(topic, "g") as sub:
            assert collect(sub, 1)[0].body == b"x"
            consumer: Any = sub._consumer._consumer  # type: ignore[attr-defined]
            clusters = [backend._admin._manager.cluster, backend._producer._metadata, consumer._manager.cluster]
            assert [cluster.config["retry_backoff_ms"] for cluster in clusters] == [7, 7, 7]


def test_prepare_publish_starts_the_producer_with_the_topic_known(broker, topic) -> None:
    """What a first publish would wait for (the producer's start, the topic's partitions) is done by
    prepare_publish: a migration's publishing process does it before its clock starts."""
    broker.declare(topic)
    backend: Any = broker.backend
    assert backend._producer is None
    backend.prepare_publish(topic)
    assert backend._producer._metadata.partitions_for_topic(topic) == set(range(backend.options.partitions))
    assert broker.publish_batch(topic, [b"x"])


def _outcome_within(call: Any, seconds: float) -> str:
    """``call``'s end ("returned" or the bridgeq error's name), or "still running" after ``seconds``."""
    outcome = ["still running"]

    def run() -> None:
        try:
            call()
            outcome[0] = "returned"
        except bridgeq.BridgeqError as exc:
            outcome[0] = type(exc).__name__

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0]


def test_a_member_made_while_the_broker_is_unreachable_fails_within_its_timeout() -> None:
    """A consumer given api_version (bridgeq passes the one it learnt) skips kafka-python's bounded bootstrap,
    and kafka-python waits for a topic's partitions without a limit: a broker gone between declare and the
    member's join hung subscribe for good. It now raises ConnectionLost after timeout_ms."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nobody listens here
    with bridgeq.connect(f"kafka://127.0.0.1:{port}?timeout_ms=1000") as broker:
        backend: Any = broker.backend
        backend._api_version = (4, 0)  # learnt from an earlier client
        backend.declare = lambda topic, group: None  # declared before the broker went away
        assert _outcome_within(lambda: broker.subscribe("t", "g").close(), 20) == "ConnectionLost"


def test_a_new_partition_whose_commit_cannot_be_read_ends_the_fetch_and_loses_nothing(kafka_url, topic, caplog) -> None:
    """kafka-python's committed() retries a coordinator that is loading or moving without a limit; a member
    reads it for each partition it starts reading, so its fetch (and receive, whatever its timeout) hung.
    The fetch now raises ConnectionLost after timeout_ms (the subscription waits for the broker, as in any
    outage, and receive returns on time), and the records it had polled are delivered once the commit
    can be read."""
    import kafka.errors as kx

    with bridgeq.connect(with_options(kafka_url, timeout_ms=1000)) as broker:
        broker.declare(topic, "g")
        with broker.subscribe(topic, "g") as sub:
            assert sub.receive(timeout=2) is None  # joined, positions known, no partition read yet
            broker.publish(topic, b"kept", key="k")
            coordinator: Any = sub._consumer._consumer._coordinator  # type: ignore[attr-defined]
            fetch_offsets = coordinator._send_offset_fetch_request

            async def loading(*args: Any, **kwargs: Any) -> Any:
                raise kx.CoordinatorLoadInProgressError()

            coordinator._send_offset_fetch_request = loading
            try:
                assert _outcome_within(lambda: sub.receive(timeout=3), 20) == "returned"
                assert "KafkaTimeoutError" in caplog.text  # the fetch gave up on the commit, not on the wait
            finally:
                coordinator._send_offset_fetch_request = fetch_offsets
            got = collect(sub, 1)
            assert [d.body for d in got] == [b"kept"]
            got[0].ack()


def test_a_batch_too_large_for_its_topic_is_split_and_still_confirmed(kafka_url, topic, settings, caplog) -> None:
    """A topic whose max.message.bytes is below batch_size: the broker refuses the batch, kafka-python
    splits it, and the halves' confirmations answer publish (not a timeout error after timeout_ms)."""
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**settings)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "20000"})])
    finally:
        admin.close()
    with bridgeq.connect(with_options(kafka_url, timeout_ms=5000)) as broker:
        broker.declare(topic, "g")
        messages = [bridgeq.Message(b"%04d" % i + b"." * 200, key="k") for i in range(500)]  # ~120 KB
        with caplog.at_level(logging.WARNING, logger="kafka.producer.sender"):
            ids = broker.publish_batch(topic, messages)
        assert "splitting batch" in caplog.text
        with broker.subscribe(topic, "g", prefetch=500) as sub:
            got = collect(sub, len(ids))
    assert [d.id for d in got] == ids and [d.body for d in got] == [m.body for m in messages]
