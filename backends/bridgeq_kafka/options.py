"""The URL options of ``kafka://`` (one declaration; docs, errors and ``bridgeq check`` read it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bridgeq.errors import ConfigError
from bridgeq.options import option

KAFKA_MAX_NAME = 249
"""Kafka's limit on topic names; the core keeps bridgeq names to 120 characters."""
CONNECTIONS_MAX_IDLE_MS = 540_000
"""kafka-python's connections_max_idle_ms (left at its default): a consumer refuses request timeouts as long."""

BROKER_MESSAGE_MAX_BYTES = 1048588
"""The broker's default ``message.max.bytes``: the largest record batch it accepts."""

_NAME = re.compile(r"[A-Za-z0-9._-]*\Z")


@dataclass(frozen=True)
class KafkaOptions:
    """Options of a Kafka URL: ``kafka://[user:password@]host:port[,host:port...]?name=value``."""

    prefix: str = option("", "prepended to every topic and group id; '' (the default) uses names as they are")
    partitions: int = option(3, "partitions of the topics declare creates (consumers of a group share them)")
    replication_factor: int | None = option(None, "replicas of the topics declare creates; none: the broker's default")
    group_start: Literal["latest", "earliest"] = option(
        "latest",
        "where a new group starts: 'latest' at declare (no replay), 'earliest' also reads the retained history",
    )
    acks: Literal["all", "1"] = option("all", "publish confirmation: 'all' in-sync replicas (idempotent) or the leader")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = option("none", "producer compression codec")
    linger_ms: int = option(0, "producer: wait this long for more messages before sending a batch")
    batch_size: int = option(
        262144, "producer: bytes per partition batch (a topic whose max.message.bytes is lower splits them)"
    )
    max_message_size: int = option(
        1_000_000, "largest message accepted: body + id + key + headers, bytes (below the broker's message.max.bytes)"
    )
    session_timeout_ms: int = option(
        10000, "a consumer silent this long (crashed) leaves its group; its unacked messages go to the others"
    )
    heartbeat_interval_ms: int = option(250, "consumer heartbeats; members notice a rebalance within this time")
    max_poll_interval_ms: int = option(300000, "a member that does not ask for messages this long is removed")
    assignor: Literal["range", "roundrobin", "cooperative-sticky"] = option(
        "range", "how partitions are shared in a group (cooperative-sticky moves fewer on rebalance)"
    )
    retry_backoff_ms: int = option(20, "wait before retrying a failed request; also paces a new member's first steps")
    timeout_ms: int = option(30000, "how long to wait for the broker: connecting, requests, publish confirmations")
    client_id: str = option("bridgeq", "client id the broker logs and quotas see")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = option(
        None, "none: PLAINTEXT, or SASL_SSL when the URL has credentials"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = option(
        None, "SASL mechanism for the URL's user:password; none: PLAIN"
    )
    ssl_cafile: str | None = option(None, "PEM file of the CAs to trust (default: the system's)")
    ssl_certfile: str | None = option(None, "client certificate (PEM) for mutual TLS")
    ssl_keyfile: str | None = option(None, "private key (PEM) of ssl_certfile")
    ssl_check_hostname: bool = option(True, "check the broker's certificate matches its host name")

    def __post_init__(self) -> None:
        if not _NAME.match(self.prefix) or len(self.prefix) > KAFKA_MAX_NAME - 130:
            raise ConfigError(
                f"option 'prefix' must be at most {KAFKA_MAX_NAME - 130} of A-Z a-z 0-9 . _ -; got {self.prefix[:40]!r}"
            )
        if self.partitions < 1 or (self.replication_factor is not None and self.replication_factor < 1):
            raise ConfigError("options 'partitions' and 'replication_factor' must be at least 1")
        if not 0 < self.max_message_size <= 100 << 20:
            raise ConfigError(f"option 'max_message_size' must be 1 to {100 << 20}; got {self.max_message_size}")
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ConfigError("option 'heartbeat_interval_ms' must be positive and below 'session_timeout_ms'")
        if not 1000 <= self.timeout_ms < CONNECTIONS_MAX_IDLE_MS:
            raise ConfigError(
                f"option 'timeout_ms' must be 1000 to {CONNECTIONS_MAX_IDLE_MS - 1} (kafka-python closes connections "
                f"idle for {CONNECTIONS_MAX_IDLE_MS} ms and wants requests to time out before); got {self.timeout_ms}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"option 'batch_size' must be positive; got {self.batch_size}")
