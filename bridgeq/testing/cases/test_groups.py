"""Groups: every group gets every message; inside a group, consumers compete."""

from __future__ import annotations

import threading

import pytest

import bridgeq
from bridgeq.testing.support import collect, patience, quiet


def test_fan_out_to_two_groups_while_both_are_offline(broker, names, size):
    topic, first, second = names.topic(), names.group("a"), names.group("b")
    broker.declare(topic, first)
    broker.declare(topic, second)
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(size.n(50, 1000))])
    for group in (first, second):
        with broker.subscribe(topic, group) as sub:
            got = collect(sub, len(ids))
            assert sorted(d.id for d in got) == sorted(ids), f"group {group} missed messages"


def test_topic_isolation_under_concurrency(broker, names, size):
    count = size.n(100, 2000)
    topics = [names.topic(f"iso{i}") for i in range(3)]
    group = names.group()
    for topic in topics:
        broker.declare(topic, group)
    sent: dict[str, list[str]] = {}

    def publish(topic: str) -> None:
        sent[topic] = broker.publish_batch(topic, [f"{topic}:{i}" for i in range(count)])

    threads = [threading.Thread(target=publish, args=(t,)) for t in topics]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for topic in topics:
        with broker.subscribe(topic, group) as sub:
            got = collect(sub, count) + quiet(sub, 0.3)
        assert sorted(d.id for d in got) == sorted(sent[topic])
        assert all(d.body.startswith(topic.encode() + b":") and d.topic == topic for d in got)


def test_competing_consumers_share_the_load_and_miss_nothing(broker, names, size):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    count = size.n(200, 2000)
    subs = [broker.subscribe(topic, group, prefetch=10), broker.subscribe(topic, group, prefetch=10)]
    received: list[list[bridgeq.Delivery]] = [[], []]
    done = threading.Event()
    started = threading.Barrier(3)

    def consume(index: int) -> None:
        sub = subs[index]
        sub.receive(timeout=0.2)  # join the group before anything is published
        started.wait()
        while not done.is_set():
            for delivery in sub.receive_batch(5, timeout=0.2):
                received[index].append(delivery)
                done.wait(0.002)  # a little work per message, so both get a share
                delivery.ack()
            if sum(map(len, received)) >= count:
                done.set()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    started.wait()
    ids = broker.publish_batch(topic, [bridgeq.Message(f"m{i}", key=f"k{i}") for i in range(count)])
    done.wait(60)
    done.set()
    for thread in threads:
        thread.join()
    for sub in subs:
        sub.close()
    union = [d.id for part in received for d in part]
    assert sorted(set(union)) == sorted(ids), "the union of both consumers must be every message"
    assert all(received), f"both consumers must get a share: {[len(p) for p in received]}"


def test_concurrent_publishers_lose_nothing(broker, names, size):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    per_thread = size.n(100, 2500)
    sent: list[str] = []
    lock = threading.Lock()

    def publish(n: int) -> None:
        for i in range(per_thread):
            mid = broker.publish(topic, f"{n}:{i}".encode(), key=f"p{n}")
            with lock:
                sent.append(mid)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with broker.subscribe(topic, group) as sub:
        got = collect(sub, len(sent)) + quiet(sub, 0.3)
    assert sorted(d.id for d in got) == sorted(sent)


def test_late_group_sees_history_only_if_replay_is_promised(broker, names):
    topic, early, late = names.topic(), names.group("a"), names.group("b")
    broker.declare(topic, early)
    before = broker.publish(topic, b"before the late group")
    broker.declare(topic, late)
    after = broker.publish(topic, b"after the late group")
    with broker.subscribe(topic, late) as sub:
        got = {d.id for d in collect(sub, 2 if broker.capabilities.replay else 1) + quiet(sub, 0.5)}
    expected = {before, after} if broker.capabilities.replay else {after}
    assert got == expected


@pytest.mark.requires("ordered_per_key")
def test_per_key_order_of_first_deliveries_survives_redelivery(broker, names, size):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    keys = [f"key{k}" for k in range(4)]
    count = size.n(100, 2000)
    sent = [bridgeq.Message(f"{keys[i % 4]}:{i}", key=keys[i % 4]) for i in range(count)]
    broker.publish_batch(topic, sent)
    first_seen: dict[str, list[str]] = {k: [] for k in keys}
    seen: set[str] = set()
    with broker.subscribe(topic, group, prefetch=10, max_deliveries=None) as sub:
        for n, delivery in enumerate(_until(sub, count, seen)):
            if delivery.id not in seen:
                seen.add(delivery.id)
                first_seen[delivery.key or ""].append(delivery.id)
            if n % 7 == 3 and delivery.attempt == 1:
                delivery.nack(requeue=True)
            else:
                delivery.ack()
    for key in keys:
        expected = [m.id for m in sent if m.key == key]
        assert first_seen[key] == expected, f"key {key}: first deliveries out of publish order"


def _until(sub, count, seen):
    while len(seen) < count:
        batch = sub.receive_batch(10, timeout=patience())
        assert batch, "messages stopped arriving"
        yield from batch
