"""redis-py exceptions -> bridgeq errors: one table, used through ``translate_errors``."""

from __future__ import annotations

import redis.exceptions as rx

from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost
from bridgeq.spi import ErrorTable


class PoolExhausted(BridgeqError):
    """Every connection of a pool is in use (option max_connections): not an outage, so not ConnectionLost."""


class NotConnected(Exception):
    """A pooled connection could not connect, after the retries its own policy makes (redis-py retries a
    connect within get_connection): the caller's retry must not retry it again, or the waits multiply."""


REFUSED = (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)
"""The server refuses these credentials: redis-py derives some from ConnectionError, but retrying cannot help."""

ERRORS: ErrorTable = (
    (REFUSED, ConfigError),  # before ConnectionError
    (rx.MaxConnectionsError, PoolExhausted),
    ((rx.ConnectionError, rx.TimeoutError, OSError, NotConnected), ConnectionLost),
    (rx.RedisError, BridgeqError),
)

RETRYABLE = (rx.ConnectionError, rx.TimeoutError)
"""What redis-py's Retry retries (idempotent commands only)."""


def is_group_gone(exc: BaseException) -> bool:
    """True for the errors a command gets when its stream or group was deleted under it."""
    if not isinstance(exc, rx.ResponseError) or isinstance(exc, rx.NoPermissionError):
        return False
    text = str(exc)
    return text.startswith(("NOGROUP", "UNBLOCKED")) or "NOGROUP" in text
