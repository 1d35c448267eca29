"""The URL options of ``amqp://`` and ``amqps://`` brokers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridgeq.errors import ConfigError
from bridgeq.options import option

__all__ = ["RabbitMQOptions"]


@dataclass(frozen=True)
class RabbitMQOptions:
    """Options read from the query string, e.g. ``amqp://h/%2F?heartbeat=10&prefetch=50``."""

    prefix: str = option("bridgeq.", 'prepended to exchange and queue names; "" addresses existing names as they are')
    queue_name: str = option(
        "{prefix}{topic}:{group}", "a group's queue name; {prefix}, {topic} and {group} are filled in"
    )
    queue_type: Literal["quorum", "classic"] = option(
        "quorum", "quorum: attempt is exact (x-delivery-count); classic: attempt is 1, or 2 once redelivered"
    )
    exchange_type: Literal["fanout", "topic"] = option(
        "fanout", "type of a topic's exchange (an existing topic exchange: groups bind with '#')"
    )
    heartbeat: int = option(30, "seconds between AMQP heartbeats (0: none); the I/O thread sends them")
    prefetch: int | None = option(None, "basic.qos per subscription (default: the subscription's prefetch)")
    confirm: bool = option(True, "publisher confirms: publish returns once the broker has every message")
    mandatory: bool = option(False, "a message no group receives raises PublishError instead of being dropped")
    connect_timeout: float = option(10.0, "seconds to wait for a connection or reconnection")
    publish_timeout: float = option(30.0, "seconds publish waits for confirms before raising PublishError")
    max_message_size: int = option(16 << 20, "largest message accepted (body, id, key and headers), bytes")
    tls_verify: bool = option(True, "amqps://: verify the server's certificate and host name")
    ca_file: str | None = option(None, "amqps://: CA bundle to verify the server with (default: system CAs)")
    cert_file: str | None = option(None, "amqps://: client certificate (PEM) for mutual TLS")
    key_file: str | None = option(None, "amqps://: the client certificate's private key (PEM)")

    def __post_init__(self) -> None:
        if len(self.prefix.encode()) > 100:
            raise ConfigError("option 'prefix' must be at most 100 bytes")
        if "{group}" not in self.queue_name:
            raise ConfigError("option 'queue_name' must contain {group}")
        try:
            self.queue_name.format(prefix="", topic="", group="")
        except (KeyError, IndexError, ValueError):
            raise ConfigError("option 'queue_name' may use only {prefix}, {topic} and {group}") from None
        if self.prefetch is not None and not 0 < self.prefetch <= 65535:
            raise ConfigError("option 'prefetch' must be 1 to 65535")
        if self.heartbeat > 65535:
            raise ConfigError("option 'heartbeat' must be 0 to 65535 seconds")
        if self.max_message_size < 1:
            raise ConfigError("option 'max_message_size' must be at least 1")
        if self.connect_timeout <= 0 or self.publish_timeout <= 0:
            raise ConfigError("options 'connect_timeout' and 'publish_timeout' must be positive")
        if self.key_file and not self.cert_file:
            raise ConfigError("option 'key_file' needs 'cert_file'")
