"""The URL options of ``redis://`` and ``rediss://`` (one declaration; docs and errors read it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from bridgeq.errors import ConfigError
from bridgeq.options import option
from bridgeq.wire import ID_HEADER

REDIS_MAX_BULK = 512 << 20
"""Redis refuses a single string larger than this (proto-max-bulk-len)."""


MIN_SOCKET_TIMEOUT = 0.5
"""Seconds: Redis ends a BLOCK on its clock (10 ticks a second by default), up to 0.2 s after it was due."""


@dataclass(frozen=True)
class RedisOptions:
    """Options of a Redis Streams URL: ``redis://[[user]:password@]host[:port][/db]?name=value``."""

    prefix: str = option("bridgeq:", "stream key prefix: topic T lives in stream <prefix>T; '' uses names as they are")
    claim_idle_ms: int = option(
        30000, "an unacked entry idle this long (its consumer died) is claimed by another member; crash redelivery time"
    )
    renew: bool = option(
        True, "renew the claim on a live consumer's unacked entries every claim_idle_ms/3: slow handlers keep them"
    )
    group_start: Literal["earliest", "latest"] = option(
        "earliest", "where a new group starts: 'earliest' also reads entries already in the stream, 'latest' only new"
    )
    maxlen: int | None = option(None, "trim streams to about this many entries on publish (XADD MAXLEN ~)")
    max_age_ms: int | None = option(None, "trim entries older than this on publish (XADD MINID ~ now-max_age_ms)")
    body_field: str = option("body", "stream field holding the body; every other field is a header")
    key_field: str = option("key", "stream field holding the message key")
    max_message_size: int = option(1 << 20, "largest message accepted: body + id + key + headers, bytes")
    socket_timeout: float = option(10.0, "seconds to wait for a reply before the connection counts as lost")
    connect_timeout: float = option(5.0, "seconds to wait for a connection")
    retries: int = option(3, "retries, with backoff, of idempotent commands after a connection error (never XADD)")
    max_connections: int = option(
        100, "connections each pool may open: one per call in progress, and one per subscription reading ahead"
    )
    tls_ca_file: str | None = option(None, "rediss://: PEM file of the CAs to trust (default: the system's)")
    tls_cert_file: str | None = option(None, "rediss://: client certificate (PEM) for mutual TLS")
    tls_key_file: str | None = option(None, "rediss://: private key (PEM) of tls_cert_file")
    tls_insecure: bool = option(False, "rediss://: do not verify the server's certificate or host name (testing only)")

    def __post_init__(self) -> None:
        if self.claim_idle_ms < 100:
            raise ConfigError(f"option 'claim_idle_ms' must be at least 100; got {self.claim_idle_ms}")
        if self.maxlen is not None and self.max_age_ms is not None:
            raise ConfigError("options 'maxlen' and 'max_age_ms' exclude each other (Redis trims by one rule per XADD)")
        if not self.body_field or not self.key_field or self.body_field == self.key_field:
            raise ConfigError("options 'body_field' and 'key_field' must be non-empty and different")
        if ID_HEADER in (self.body_field, self.key_field):
            raise ConfigError(f"options 'body_field' and 'key_field' must not be {ID_HEADER!r} (the message id)")
        if not 0 < self.max_message_size <= REDIS_MAX_BULK:
            raise ConfigError(f"option 'max_message_size' must be 1 to {REDIS_MAX_BULK}; got {self.max_message_size}")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"option {name!r}: no such file {path[:200]!r}")
        if self.socket_timeout < MIN_SOCKET_TIMEOUT or self.connect_timeout <= 0:
            raise ConfigError(
                f"option 'socket_timeout' must be at least {MIN_SOCKET_TIMEOUT} (an idle fetch waits in Redis up "
                "to 0.2 s longer than asked) and 'connect_timeout' positive"
            )
        if self.retries < 0 or self.max_connections < 1:
            raise ConfigError("option 'retries' must not be negative and 'max_connections' must be at least 1")
