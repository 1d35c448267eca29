"""At-least-once: what is not acked comes back; what fails too often is dead-lettered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import bridgeq
from bridgeq import wire
from bridgeq.testing.support import collect, patience, quiet


def _declared(broker, names, count=1, **publish):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    ids = [broker.publish(topic, f"m{i}".encode(), **publish) for i in range(count)]
    return topic, group, ids


def test_acked_messages_are_not_redelivered_after_close_and_reopen(broker, names, size):
    topic, group, ids = _declared(broker, names, size.n(30, 500))
    with broker.subscribe(topic, group) as sub:
        assert sorted(d.id for d in collect(sub, len(ids))) == sorted(ids)
    with broker.subscribe(topic, group) as sub:
        assert quiet(sub, 1.5) == []


def test_nack_requeue_redelivers_with_attempt_plus_one(broker, names):
    topic, group, [mid] = _declared(broker, names, headers={"h": "v"}, key="k")
    with broker.subscribe(topic, group) as sub:
        [first] = collect(sub, 1, ack=False)
        assert first.attempt == 1 and not first.redelivered
        first.nack(requeue=True)
        [second] = collect(sub, 1, ack=False)
        assert (second.id, second.body, dict(second.headers), second.key) == (mid, b"m0", {"h": "v"}, "k")
        assert second.attempt == 2 and second.redelivered
        second.ack()
        assert quiet(sub, 0.5) == []


def test_nack_without_requeue_dead_letters_at_once(broker, names):
    topic, group, [mid] = _declared(broker, names, headers={"h": "v"}, key="k")
    with broker.subscribe(topic, group) as sub:
        [delivery] = collect(sub, 1, ack=False)
        delivery.nack(requeue=False, reason="bad payload")
        assert quiet(sub, 1.0) == [], "a dead-lettered message is moved, not copied"
        dead_letters = sub.dead_letter_topic
    assert dead_letters == wire.dead_letter_topic(topic, group)
    with broker.subscribe(dead_letters, group) as dlq:
        [dead] = collect(dlq, 1)
    assert (dead.id, dead.body, dead.key) == (mid, b"m0", "k")
    assert dead.headers["h"] == "v"
    assert dead.headers[wire.DEAD_LETTER_REASON] == "bad payload"
    assert dead.headers[wire.DEAD_LETTER_ATTEMPTS] == "1"
    assert dead.headers[wire.DEAD_LETTER_TOPIC] == topic
    assert dead.headers[wire.DEAD_LETTER_GROUP] == group


def test_max_deliveries_dead_letters_after_the_last_attempt(broker, names):
    topic, group, [mid] = _declared(broker, names)
    with broker.subscribe(topic, group, max_deliveries=3) as sub:
        attempts = []
        for _ in range(3):
            [delivery] = collect(sub, 1, ack=False)
            attempts.append(delivery.attempt)
            delivery.nack(requeue=True)
        assert quiet(sub, 1.0) == []
    if broker.capabilities.exact_delivery_count:
        assert attempts == [1, 2, 3]
    with broker.subscribe(wire.dead_letter_topic(topic, group), group) as dlq:
        [dead] = collect(dlq, 1)
    assert dead.id == mid
    assert dead.headers[wire.DEAD_LETTER_ATTEMPTS] == "3"
    assert "max_deliveries" in dead.headers[wire.DEAD_LETTER_REASON]


def test_poison_message_never_blocks_the_others(broker, names, size):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    poison = broker.publish(topic, b"poison")
    good = broker.publish_batch(topic, [f"good{i}" for i in range(size.n(20, 200))])
    handled: list[str] = []

    def handler(delivery: bridgeq.Delivery) -> None:
        if delivery.body == b"poison":
            raise ValueError("cannot parse")
        handled.append(delivery.id)

    with broker.subscribe(topic, group, max_deliveries=2, prefetch=5) as sub:
        sub.run(handler, stop_after=len(good) + 2, idle_timeout=patience())
        assert quiet(sub, 0.5) == []
    assert sorted(handled) == sorted(good)
    with broker.subscribe(wire.dead_letter_topic(topic, group), group) as dlq:
        [dead] = collect(dlq, 1)
    assert dead.id == poison
    assert "ValueError: cannot parse" in dead.headers[wire.DEAD_LETTER_REASON]


def test_unacked_messages_come_back_after_close(broker, names, size):
    topic, group, ids = _declared(broker, names, size.n(10, 200))
    with broker.subscribe(topic, group, prefetch=len(ids)) as sub:
        assert len(collect(sub, len(ids), ack=False)) == len(ids)
    with broker.subscribe(topic, group, prefetch=len(ids)) as sub:
        again = collect(sub, len(ids))
    assert sorted(d.id for d in again) == sorted(ids)
    if broker.capabilities.exact_delivery_count:
        assert {d.attempt for d in again} == {2}


@pytest.mark.parametrize("read_ahead", [False, True], ids=["plain", "read_ahead"])
def test_repeated_open_read_close_cycles_lose_nothing(broker, names, size, read_ahead):
    """With read_ahead, each close also gives back the next batch, read ahead and never handed over."""
    topic, group, ids = _declared(broker, names, size.n(60, 1000))
    seen: set[str] = set()
    cycles = 0
    while cycles < len(ids) and seen != set(ids):  # each cycle acks at least one, unless messages stop
        cycles += 1
        with broker.subscribe(topic, group, prefetch=14 if read_ahead else 7, read_ahead=read_ahead) as sub:
            batch = sub.receive_batch(7, timeout=5.0)
            for n, delivery in enumerate(batch):
                if n < 5:  # the rest go back unacked at close
                    delivery.ack()
                    seen.add(delivery.id)
    assert seen == set(ids), f"lost after {cycles} cycles: {len(set(ids) - seen)}"


def test_callback_style_acks_on_return_and_nacks_on_raise(broker, names):
    topic, group, ids = _declared(broker, names, 5)
    calls: list[tuple[str, int]] = []

    def handler(delivery: bridgeq.Delivery) -> None:
        calls.append((delivery.id, delivery.attempt))
        if delivery.id == ids[2] and delivery.attempt == 1:
            raise RuntimeError("transient")

    with broker.subscribe(topic, group) as sub:
        assert sub.run(handler, stop_after=6, idle_timeout=patience()) == 6
        assert quiet(sub, 1.0) == []
    assert sorted({mid for mid, _ in calls}) == sorted(ids)
    assert [mid for mid, _ in calls].count(ids[2]) == 2
    if broker.capabilities.exact_delivery_count:
        assert (ids[2], 2) in calls


_KILLED_CONSUMER = textwrap.dedent(
    """
    import sys, time, bridgeq
    broker = bridgeq.connect(sys.argv[1])
    sub = broker.subscribe(sys.argv[2], sys.argv[3], prefetch=int(sys.argv[4]))
    held = []
    deadline = time.monotonic() + 60
    while len(held) < int(sys.argv[4]) and time.monotonic() < deadline:
        held.extend(sub.receive_batch(int(sys.argv[4]) - len(held), timeout=1.0))
    print(len(held), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.requires("crash_redelivery")
def test_consumer_killed_with_sigkill_has_its_messages_redelivered(broker, broker_url, names):
    topic, group, ids = _declared(broker, names, 100)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CONSUMER, broker_url, topic, group, "100"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        held = child.stdout.readline().strip() if child.stdout else ""
        assert held == "100", f"the doomed consumer should hold 100 unacked messages, held {held!r}"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    wait = broker.capabilities.crash_redelivery_seconds + patience()
    with broker.subscribe(topic, group, prefetch=100) as sub:
        got = collect(sub, 100, wait=wait)
    assert sorted(d.id for d in got) == sorted(ids)
    if broker.capabilities.exact_delivery_count:
        assert {d.attempt for d in got} == {2}
