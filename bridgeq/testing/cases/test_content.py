"""Messages arrive as they were sent: body, headers, key and id, nothing missing, nothing extra."""

from __future__ import annotations

import pytest

import bridgeq
from bridgeq.testing.support import collect, quiet


def _send_and_receive(broker, names, messages):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    broker.publish_batch(topic, messages)
    with broker.subscribe(topic, group) as sub:
        got = collect(sub, len(messages))
        got += quiet(sub, 0.5)
    return got


def test_round_trip_keeps_body_headers_key_and_id(broker, names, size):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    sent = {}
    for i in range(size.n(20, 500)):
        headers = {"type": "created", "n": str(i)} if i % 2 else {}
        key = f"k{i % 3}" if i % 4 else None
        mid = broker.publish(topic, f"body-{i}".encode(), headers=headers, key=key)
        sent[mid] = (f"body-{i}".encode(), headers, key)
    with broker.subscribe(topic, group) as sub:
        got = collect(sub, len(sent))
        extra = quiet(sub, 0.5)
    received = {d.id: (d.body, dict(d.headers), d.key) for d in got}
    assert not extra, f"unexpected extra deliveries: {[d.id for d in extra]}"
    assert set(received) == set(sent), f"missing {set(sent) - set(received)}, extra {set(received) - set(sent)}"
    assert received == sent
    assert len(got) == len(sent)
    assert all(d.topic == topic and d.group == group and d.attempt == 1 for d in got)


def test_publish_batch_returns_ids_and_delivers_all(broker, names, size):
    count = size.n(200, 5000)
    messages = [bridgeq.Message(f"m{i}", key="same") for i in range(count)]
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    ids = broker.publish_batch(topic, messages)
    assert ids == [m.id for m in messages]
    with broker.subscribe(topic, group) as sub:
        got = collect(sub, count)
    assert sorted(d.id for d in got) == sorted(ids)
    if broker.capabilities.ordered_per_key:
        assert [d.id for d in got] == ids, "one key, one consumer: publish order"


def test_custom_ids_are_preserved(broker, names):
    messages = [bridgeq.Message(b"x", id=f"order-{i}:v1") for i in range(10)]
    got = _send_and_receive(broker, names, messages)
    assert sorted(d.id for d in got) == sorted(m.id for m in messages)


def test_empty_body(broker, names):
    got = _send_and_receive(broker, names, [bridgeq.Message(b"", headers={"h": "v"})])
    assert [(d.body, dict(d.headers)) for d in got] == [(b"", {"h": "v"})]


def test_binary_body_with_every_byte_value(broker, names):
    body = bytes(range(256)) * 4
    got = _send_and_receive(broker, names, [bridgeq.Message(body), bridgeq.Message(body[::-1])])
    assert sorted(d.body for d in got) == sorted([body, body[::-1]])


def test_unicode_headers_key_and_str_body(broker, names):
    headers = {"emoji": "🚀 ünïcødé", "ключ": "значение", "empty": ""}
    got = _send_and_receive(broker, names, [bridgeq.Message("héllo wörld ✓", headers=headers, key="клиент-7")])
    assert len(got) == 1
    assert got[0].body == "héllo wörld ✓".encode()
    assert dict(got[0].headers) == headers
    assert got[0].key == "клиент-7"


def test_max_size_message_round_trips(broker, names):
    limit = broker.capabilities.max_message_size
    message = bridgeq.Message(b"", id="max-size")
    message.body = b"\x5a" * (limit - message.size())
    assert message.size() == limit
    got = _send_and_receive(broker, names, [message])
    assert [(d.id, len(d.body)) for d in got] == [("max-size", len(message.body))]
    assert got[0].body == message.body


def test_oversize_message_raises_before_anything_is_sent(broker, names):
    topic, group = names.topic(), names.group()
    broker.declare(topic, group)
    limit = broker.capabilities.max_message_size
    with pytest.raises(bridgeq.MessageTooLarge) as raised:
        broker.publish(topic, b"x" * (limit + 1))
    assert str(limit) in str(raised.value)
    ok = [bridgeq.Message(b"fine") for _ in range(3)]
    with pytest.raises(bridgeq.MessageTooLarge):
        broker.publish_batch(topic, [*ok, bridgeq.Message(b"y" * (limit + 1))])
    broker.publish(topic, b"marker", id="marker")
    with broker.subscribe(topic, group) as sub:
        got = collect(sub, 1) + quiet(sub, 0.5)
    assert [d.id for d in got] == ["marker"], "nothing of a rejected batch may be sent"
