"""Messages are checked on the way in; deliveries settle once."""

from __future__ import annotations

import threading

import pytest

import bridgeq
from bridgeq.message import Settlement, new_id


def test_ids_are_unique_across_threads():
    seen: list[str] = []

    def make() -> None:
        seen.extend(new_id() for _ in range(10_000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 40_000


def test_str_body_is_utf8_and_bytes_like_are_accepted():
    assert bridgeq.Message("é").body == "é".encode()
    assert bridgeq.Message(bytearray(b"ab")).body == b"ab"
    assert bridgeq.Message(memoryview(b"cd")).body == b"cd"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"body": 1}, "body must be bytes or str"),
        ({"headers": {"a": 1}}, "header 'a' must be a str"),
        ({"headers": {"": "x"}}, "non-empty"),
        ({"headers": [("a", "b")]}, "mapping"),
        ({"headers": {"ce_id": "x"}}, "reserved"),
        ({"key": 5}, "key must be a str"),
        ({"id": ""}, "message id"),
        ({"id": "x" * 201}, "message id"),
        ({"id": "tab\there"}, "message id"),
    ],
)
def test_bad_messages_are_config_errors(kwargs, match):
    with pytest.raises(bridgeq.ConfigError, match=match):
        bridgeq.Message(**kwargs)


def test_size_counts_body_id_key_and_headers():
    message = bridgeq.Message(b"12345", headers={"ab": "é"}, key="kk", id="id1")
    assert message.size() == 5 + 3 + 2 + 2 + 2


def test_settlement_is_idempotent_and_conflicts_raise():
    with bridgeq.connect() as broker, broker.subscribe("t", "g") as sub:
        broker.publish_batch("t", [b"a", b"b"])
        first, second = sub.receive_batch(2, timeout=1)
        first.ack()
        first.ack()
        assert first.state is Settlement.ACKED
        with pytest.raises(bridgeq.DeliveryStateError, match="already acked"):
            first.nack()
        second.nack(requeue=False)
        second.nack(requeue=False)
        with pytest.raises(bridgeq.DeliveryStateError):
            second.ack()


def test_ack_after_close_says_the_message_comes_back():
    with bridgeq.connect() as broker:
        sub = broker.subscribe("t", "g")
        broker.publish("t", b"x")
        delivery = sub.receive(timeout=1)
        sub.close()
        with pytest.raises(bridgeq.ClosedError, match="delivered again"):
            delivery.ack()
        with broker.subscribe("t", "g") as again:
            assert again.receive(timeout=1).id == delivery.id


def test_batch_ack_rejects_foreign_deliveries():
    with bridgeq.connect() as broker, broker.subscribe("t", "a") as a, broker.subscribe("t", "b") as b:
        broker.publish("t", b"x")
        delivery = a.receive(timeout=1)
        with pytest.raises(bridgeq.DeliveryStateError):
            b.ack([delivery])
        a.ack([delivery])
        assert delivery.state is Settlement.ACKED


def test_dead_letter_topics_of_the_longest_names_stay_valid_and_distinct():
    from bridgeq.names import check_name
    from bridgeq.wire import dead_letter_topic

    first = dead_letter_topic("t" * 120, "g" * 120)
    second = dead_letter_topic("t" * 120, "g" * 119 + "h")
    assert check_name("topic", first) and check_name("topic", second)
    assert len(first) == 120 and first != second and first.endswith(".dlq")
    assert dead_letter_topic("orders", "billing") == "orders.billing.dlq"
