"""redis-py exceptions -> bridgeq errors: one table, used through ``translate_errors``."""

from __future__ import annotations

import redis.exceptions as rx

from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost
from bridgeq.spi import ErrorTable

from .resp import NotConnected


class PoolExhausted(BridgeqError):
    """Every connection of a pool is in use (option max_connections): not an outage, so not ConnectionLost."""


ERRORS: ErrorTable = (
    # Before ConnectionError: redis-py derives the auth errors from it, but retrying cannot help.
    ((rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError), ConfigError),
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
