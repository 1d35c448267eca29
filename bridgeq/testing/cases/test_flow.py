"""Flow control and lifecycle: prefetch, timeouts, depth, close from any thread, misuse."""

from __future__ import annotations

import threading
import time

import pytest

import bridgeq
from bridgeq.testing.support import collect, quiet


def test_prefetch_one_holds_the_next_message_until_the_ack(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    ids = broker.publish_batch(topic, [bridgeq.Message(f"m{i}", key="k") for i in range(3)])
    with broker.subscribe(topic, group, prefetch=1) as sub:
        [first] = collect(sub, 1, ack=False)
        assert sub.receive(timeout=0.5) is None, "prefetch=1: nothing more until the ack"
        first.ack()
        [second] = collect(sub, 1, ack=False)
        assert second.id != first.id and second.id in ids


def test_receive_timeout_returns_none_within_the_timeout(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    with broker.subscribe(topic, group) as sub:
        sub.receive(timeout=0.5)  # let the member join before timing
        started = time.monotonic()
        assert sub.receive(timeout=0.5) is None
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0, f"receive(timeout=0.5) took {elapsed:.2f} s"


def test_close_from_other_threads_is_safe_and_idempotent(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    sub = broker.subscribe(topic, group)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(sub.receive()))
    reader.start()
    time.sleep(0.3)
    closers = [threading.Thread(target=sub.close) for _ in range(4)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(10)
    reader.join(10)
    assert not reader.is_alive(), "close() must end a blocked receive()"
    assert result == [None]
    assert sub.closed
    sub.close()


def test_iteration_ends_when_closed_from_another_thread(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    ids = broker.publish_batch(topic, ["a", "b", "c"])
    sub = broker.subscribe(topic, group)
    seen: list[str] = []
    for delivery in sub:
        seen.append(delivery.id)
        delivery.ack()
        if len(seen) == len(ids):
            threading.Timer(0.2, sub.close).start()
    assert sorted(seen) == sorted(ids)
    assert sub.closed


@pytest.mark.requires("depth")
def test_depth_counts_down_to_zero_as_messages_are_acked(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    broker.publish_batch(topic, [f"m{i}" for i in range(10)])
    assert _eventually(lambda: broker.depth(topic, group), 10)
    with broker.subscribe(topic, group) as sub:
        got = collect(sub, 10, ack=False)
        assert len(got) == 10
        for delivery in got[:4]:
            delivery.ack()
        assert _eventually(lambda: broker.depth(topic, group), 6)
        for delivery in got[4:]:
            delivery.ack()
        assert _eventually(lambda: broker.depth(topic, group), 0)


def _eventually(read, expected, patience=10.0):
    deadline = time.monotonic() + patience
    while True:
        value = read()
        if value == expected or time.monotonic() > deadline:
            assert value == expected
            return True
        time.sleep(0.1)


def test_publish_after_close_raises_a_clear_error(broker_url, names):
    broker = bridgeq.connect(broker_url)
    topic = names.topic()
    broker.declare(topic, names.group())
    broker.close()
    broker.close()
    with pytest.raises(bridgeq.ClosedError, match="closed"):
        broker.publish(topic, b"late")
    with pytest.raises(bridgeq.ClosedError):
        broker.subscribe(topic, names.group())


def test_settling_twice_the_same_way_is_a_no_op_and_conflicts_raise(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    broker.publish(topic, b"once")
    with broker.subscribe(topic, group) as sub:
        [delivery] = collect(sub, 1, ack=False)
        delivery.ack()
        delivery.ack()
        with pytest.raises(bridgeq.DeliveryStateError):
            delivery.nack()
        assert quiet(sub, 0.5) == []


@pytest.mark.parametrize("bad", ["", "has space", "slash/name", "star*", "a" * 121, "..", "ümlaut"])
def test_invalid_names_are_rejected_before_anything_is_sent(broker, names, bad):
    with pytest.raises(bridgeq.ConfigError):
        broker.publish(bad, b"x")
    with pytest.raises(bridgeq.ConfigError):
        broker.declare(names.topic(), bad)


def test_wrong_body_and_header_types_are_rejected(broker, names):
    topic = names.topic()
    for body in (12, None, ["x"], {"a": 1}):
        with pytest.raises(bridgeq.ConfigError, match="body"):
            broker.publish(topic, body)
    for headers in ({"n": 1}, {1: "x"}, "k=v", {"ce_id": "x"}):
        with pytest.raises(bridgeq.ConfigError):
            broker.publish(topic, b"x", headers=headers)
