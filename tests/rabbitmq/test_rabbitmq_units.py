"""The RabbitMQ backend's pieces that need no server: options, the error table, the wire codec."""

from __future__ import annotations

import datetime
import decimal

import pytest
from pika import exceptions as pe
from pika.spec import BasicProperties

import bridgeq
from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost, PublishError
from bridgeq.options import parse_options
from bridgeq.spi import Message, translate_errors
from bridgeq.url import parse
from bridgeq_rabbitmq import RabbitMQBackend, RabbitMQOptions
from bridgeq_rabbitmq.codec import decode, encode
from bridgeq_rabbitmq.errors import ERRORS, PublishConnectionLost, cause, refusal


def options(**query: str) -> RabbitMQOptions:
    return parse_options(RabbitMQOptions, query, "amqp")


def test_defaults_are_documented_and_sane() -> None:
    o = options()
    assert (o.prefix, o.queue_type, o.exchange_type, o.confirm, o.mandatory) == (
        "bridgeq.",
        "quorum",
        "fanout",
        True,
        False,
    )
    assert o.heartbeat == 30 and o.prefetch is None and o.tls_verify is True


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"prefetch": "0"}, "prefetch"),
        ({"queue_type": "stream"}, "queue_type"),
        ({"queue_name": "{topic}"}, "{group}"),
        ({"queue_name": "{group}{nope}"}, "queue_name"),
        ({"heartbeat": "x"}, "heartbeat"),
        ({"heartbat": "5"}, "did you mean 'heartbeat'"),
        ({"key_file": "k.pem"}, "cert_file"),
        ({"publish_timeout": "0"}, "publish_timeout"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(query: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("{", r"\{").replace("}", r"\}")):
        options(**query)


def test_tls_files_need_amqps_and_a_bad_ca_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="amqps"):
        RabbitMQBackend(parse("amqp://localhost/?ca_file=/x.pem"), options(ca_file="/x.pem"))
    with pytest.raises(ConfigError, match="TLS files"):
        RabbitMQBackend(parse("amqps://localhost/?ca_file=/no/such.pem"), options(ca_file="/no/such.pem"))


def test_a_connection_blocked_past_publish_timeout_is_closed_and_opened_again() -> None:
    """pika leaves a connection blocked by a resource alarm blocked for ever unless told otherwise; one
    connection carries publishing and the consumers' acks, so a blocked publish held the acks up too."""
    from bridgeq_rabbitmq import _parameters

    [params] = _parameters(parse("amqp://localhost/"), options(publish_timeout=7))
    assert params.blocked_connection_timeout == 7


def test_every_pika_error_base_class_is_mapped_to_a_bridgeq_error() -> None:
    bases = [
        pe.AMQPError,
        pe.AMQPConnectionError,
        pe.AMQPChannelError,
        pe.ChannelError,
        pe.StreamLostError,
        pe.ConnectionClosedByBroker,
        pe.ChannelClosedByBroker,
        pe.ChannelWrongStateError,
        pe.AMQPHeartbeatTimeout,
        pe.ProbableAuthenticationError,
    ]
    for base in bases:
        with pytest.raises(BridgeqError), translate_errors(ERRORS, "testing"):
            raise base.__new__(base)
    with pytest.raises(ConnectionLost), translate_errors(ERRORS, "testing"):
        raise pe.StreamLostError("Transport indicated EOF")
    with pytest.raises(ConfigError), translate_errors(ERRORS, "testing"):
        raise pe.ProbableAuthenticationError("ACCESS_REFUSED")


def test_broker_refusals_are_config_errors_and_wrapped_causes_are_unwrapped() -> None:
    refused = refusal(pe.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"), "declaring")
    assert isinstance(refused, ConfigError) and "inequivalent" in str(refused)
    assert refusal(pe.ChannelClosedByBroker(404, "NOT_FOUND"), "x") is None
    inner = ConnectionRefusedError(111, "Connection refused")
    assert cause(pe.AMQPConnectionError(inner)) is inner


def test_publish_connection_lost_is_both_a_publish_error_and_connection_lost() -> None:
    error = PublishConnectionLost("lost", ("a",))
    assert isinstance(error, PublishError) and isinstance(error, ConnectionLost)
    assert error.message_ids == ("a",)


def test_encode_layout() -> None:
    message = Message(b"body", headers={"type": "created", "content-type": "application/json"}, key="k1", id="m-1")
    routing_key, body, props = encode(message)
    assert (routing_key, body) == ("k1", b"body")
    assert props.delivery_mode == 2
    assert props.message_id == "m-1"
    assert props.content_type == "application/json"
    assert props.headers == {"type": "created", "cloudEvents_id": "m-1"}


def test_encode_rejects_what_amqp_cannot_carry_before_sending() -> None:
    with pytest.raises(ConfigError, match="routing keys"):
        encode(Message(b"", key="k" * 256))
    long_id = Message(b"", id="é" * 200)  # 400 bytes: too long for message_id, fine as a header
    _, _, props = encode(long_id)
    assert props.message_id is None and props.headers["cloudEvents_id"] == long_id.id


def test_decode_foreign_values_and_ids() -> None:
    table = {
        "n": 7,
        "f": 1.5,
        "b": True,
        "raw": b"\xff\xfeab",
        "d": decimal.Decimal("1.25"),
        "t": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "nested": {"a": [1, "x"]},
        "none": None,
        "x-delivery-count": 2,
    }
    delivery = decode("t", "g", "rk", True, BasicProperties(headers=table, message_id="abc"), b"x", (1, 1))
    assert delivery.id == "abc" and delivery.key == "rk" and delivery.attempt == 3
    assert delivery.headers == {
        "n": "7",
        "f": "1.5",
        "b": "true",
        "raw": "\ufffd\ufffdab",
        "d": "1.25",
        "t": "2024-01-02T03:04:05",
        "nested": '{"a": [1, "x"]}',
        "none": "",
    }
    anonymous = decode("t", "g", "", False, BasicProperties(), b"x", (1, 2))
    assert anonymous.id.startswith("amqp-") and anonymous.key is None and anonymous.attempt == 1
    classic_redelivery = decode("t", "g", "", True, BasicProperties(), b"x", (1, 3))
    assert classic_redelivery.attempt == 2


def test_url_without_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="host"):
        bridgeq.connect("amqp:///%2F")
