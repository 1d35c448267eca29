"""URL options, security settings, the error table, the partitioner and publish bookkeeping, without a broker."""

from __future__ import annotations

import logging
import os
import time
import uuid

import kafka.errors as kx
import pytest
from kafka.future import Future
from kafka.partitioner.default import DefaultPartitioner

import bridgeq
from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost, MessageTooLarge
from bridgeq.spi import translate_errors
from bridgeq.url import parse
from bridgeq_kafka.backend import RunPartitioner, _let_go
from bridgeq_kafka.errors import ERRORS


def settings(url: str) -> dict:
    with bridgeq.connect(url) as broker:  # clients are made on first use: no connection here
        return broker.backend.client_settings()  # type: ignore[attr-defined]


def test_defaults_and_capabilities() -> None:
    with bridgeq.connect("kafka://h1:9092,h2") as broker:
        caps = broker.capabilities
        assert (caps.replay, caps.exact_delivery_count, caps.crash_redelivery, caps.ordered_per_key) == (
            False,
            False,
            True,
            True,
        )
        assert caps.crash_redelivery_seconds == 10 + 0.25 + 5
        assert caps.max_message_size == 1_000_000 < 1048588 - 32 * 1024
    assert settings("kafka://h1:9092,h2")["bootstrap_servers"] == ["h1:9092", "h2:9092"]
    assert settings("kafka://[::1]:19092")["bootstrap_servers"] == ["[::1]:19092"]
    with bridgeq.connect("kafka://h?group_start=earliest&acks=1&session_timeout_ms=3000") as broker:
        assert broker.capabilities.replay and not broker.capabilities.ordered_per_key
        assert broker.capabilities.crash_redelivery_seconds == 3 + 0.25 + 5


def test_credentials_mean_sasl_over_tls_with_verification() -> None:
    config = settings("kafka://alice:s3cret@h:9093")
    assert config["security_protocol"] == "SASL_SSL"
    assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "PLAIN",
        "alice",
        "s3cret",
    )
    assert "s3cret" not in f"{config} {config['sasl_plain_password']}", "kafka-python logs its settings"
    assert config["sasl_plain_password"].encode() == b"s3cret"
    assert config["ssl_check_hostname"] is True
    config = settings("kafka://bob:pw@h?security_protocol=SASL_PLAINTEXT&sasl_mechanism=SCRAM-SHA-512")
    assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    config = settings("kafka://h?security_protocol=SSL&ssl_cafile=/ca.pem&ssl_check_hostname=false")
    assert (config["ssl_cafile"], config["ssl_check_hostname"]) == ("/ca.pem", False)


@pytest.mark.parametrize(
    "url",
    [
        "kafka://",
        "kafka://h/path",
        "kafka://user:pw@h?security_protocol=PLAINTEXT",
        "kafka://h?security_protocol=SASL_SSL",
        "kafka://h?partitions=0",
        "kafka://h?acks=0",
        "kafka://h?prefix=has/slash",
        "kafka://h?heartbeat_interval_ms=20000",
        "kafka://h?max_message_size=0",
        "kafka://h?partiton=3",
        "kafka://h?timeout_ms=999",
        "kafka://h?timeout_ms=540000",  # kafka-python's consumer would refuse it only when a member is made
        "kafka://h?batch_size=0",
    ],
)
def test_bad_urls_are_config_errors_that_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        bridgeq.connect(url)
    assert "pw" not in str(raised.value)


def test_an_unreachable_broker_is_connection_lost_without_the_password() -> None:
    url = "kafka://alice:topsecret@127.0.0.1:1?security_protocol=SASL_PLAINTEXT&timeout_ms=1000"
    with bridgeq.connect(url) as broker:
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as raised:
            broker.declare("t", "g")
        assert time.monotonic() - started < 10
        assert "topsecret" not in str(raised.value) and "topsecret" not in repr(broker)


@pytest.mark.parametrize(
    ("client_error", "expected"),
    [
        (kx.KafkaConnectionError, ConnectionLost),
        (kx.KafkaTimeoutError, ConnectionLost),
        (kx.NodeNotReadyError, ConnectionLost),
        (kx.RequestTimedOutError, ConnectionLost),
        (kx.CoordinatorNotAvailableError, ConnectionLost),
        (kx.NotLeaderForPartitionError, ConnectionLost),
        (kx.BrokerNotAvailableError, ConnectionLost),
        (kx.InvalidReceiveError, ConnectionLost),
        (ConnectionResetError, ConnectionLost),
        (kx.SaslAuthenticationFailedError, ConfigError),
        (kx.TopicAuthorizationFailedError, ConfigError),
        (kx.GroupAuthorizationFailedError, ConfigError),
        (kx.InvalidTopicError, ConfigError),
        (kx.MessageSizeTooLargeError, MessageTooLarge),
        (kx.UnknownError, BridgeqError),
        (kx.IllegalStateError, BridgeqError),
    ],
)
def test_every_client_error_maps_to_a_bridgeq_error(client_error: type[BaseException], expected: type) -> None:
    with pytest.raises(expected) as raised, translate_errors(ERRORS, "doing it"):
        raise client_error("boom")
    assert str(raised.value).startswith("doing it: ")
    assert isinstance(raised.value.__cause__, client_error)


def test_every_retriable_client_error_is_connection_lost() -> None:
    retriable = [c for c in vars(kx).values() if isinstance(c, type) and issubclass(c, kx.RetriableError)]
    assert len(retriable) > 10
    for client_error in retriable:
        with pytest.raises(ConnectionLost), translate_errors(ERRORS, "x"):
            raise client_error()


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2}

    available_partitions_for_topic = partitions_for_topic

    def topics(self) -> set[str]:
        return {"t"}


def test_keys_land_where_kafkas_default_partitioner_puts_them() -> None:
    ours, theirs, cluster = RunPartitioner(), DefaultPartitioner(), _Cluster()
    for n in range(200):
        key = f"customer-{n}".encode()
        assert ours.partition("t", key, key, b"", b"", cluster) == theirs.partition("t", key, key, b"", b"", cluster)


def test_keyless_records_go_in_runs_to_every_partition() -> None:
    ours, cluster = RunPartitioner(), _Cluster()
    chosen = [ours.partition("t", None, None, b"", b"", cluster) for _ in range(RunPartitioner.RUN * 3)]
    runs = [chosen[i : i + RunPartitioner.RUN] for i in range(0, len(chosen), RunPartitioner.RUN)]
    assert all(len(set(run)) == 1 for run in runs)
    assert {run[0] for run in runs} == {0, 1, 2}


def test_a_big_publish_lets_go_of_confirmed_futures_only_up_to_the_first_unconfirmed() -> None:
    done, failed, waiting = Future().success(None), Future().failure(kx.KafkaTimeoutError()), Future()
    futures = [done, done, failed, done, waiting]
    assert _let_go(futures, 0) == 2 and futures[:3] == [None, None, failed], "a failure stays, to be reported"
    futures = [None, None, done, waiting, done]
    assert _let_go(futures, 2) == 3 and futures == [None, None, None, waiting, done]
    assert _let_go(futures, 3) == 3, "nothing confirmed at the head: nothing let go"


def test_sasl_round_trip_never_logs_the_password(caplog: pytest.LogCaptureFixture) -> None:
    """Against a broker with a SASL listener: BRIDGEQ_TEST_KAFKA_SASL_URL=kafka://user:pw@host:port?... ."""
    url = os.environ.get("BRIDGEQ_TEST_KAFKA_SASL_URL")
    if not url:
        pytest.skip("BRIDGEQ_TEST_KAFKA_SASL_URL is not set (a SASL listener is optional)")
    password = parse(url).password or ""
    topic = f"bq-kafka-sasl-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.DEBUG, logger="kafka"), bridgeq.connect(url) as broker:
        broker.declare(topic, "g")
        mid = broker.publish(topic, b"over SASL")
        with broker.subscribe(topic, "g") as sub:
            delivery = sub.receive(timeout=10)
            assert delivery is not None and delivery.id == mid
            delivery.ack()
        broker.delete(topic)
    assert "SaslAuthenticate" in caplog.text, "the client did authenticate"
    assert password and password not in caplog.text
