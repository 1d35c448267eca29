"""pika's exceptions as bridgeq errors: one table, used through ``translate_errors``."""

from __future__ import annotations

import ssl
from concurrent.futures import CancelledError

from pika import exceptions as pe

from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost, PublishError
from bridgeq.spi import ErrorTable

__all__ = ["ERRORS", "PublishConnectionLost", "cause", "refusal"]

REFUSED = {403: "access refused", 405: "resource locked", 406: "precondition failed", 530: "not allowed"}
"""AMQP reply codes that mean the request (or the URL) is wrong, not that the network failed."""


class PublishConnectionLost(PublishError, ConnectionLost):
    """The connection was lost before the broker confirmed these messages: their fate is unknown."""


ERRORS: ErrorTable = (
    ((pe.ProbableAuthenticationError, pe.AuthenticationError, pe.ProbableAccessDeniedError), ConfigError),
    ((pe.ShortStringTooLong, pe.InvalidFieldTypeException, pe.UnsupportedAMQPFieldException), ConfigError),
    (ssl.SSLCertVerificationError, ConfigError),  # an untrusted or misnamed server certificate
    ((pe.AMQPConnectionError, pe.AMQPChannelError, pe.AMQPError, pe.ChannelError), ConnectionLost),
    ((OSError, TimeoutError, CancelledError), ConnectionLost),
)


def refusal(exc: BaseException, context: str) -> BridgeqError | None:
    """A ConfigError for a broker's refusal (wrong vhost, inequivalent queue arguments, ...); else None."""
    code = getattr(exc, "reply_code", None)
    if isinstance(exc, (pe.ChannelClosedByBroker, pe.ConnectionClosedByBroker)) and code in REFUSED:
        return ConfigError(f"{context}: the broker refused ({code} {REFUSED[code]}): {exc.reply_text}")
    return None


def cause(exc: BaseException) -> BaseException:
    """The innermost reason of pika's connection-workflow errors (their own text is often empty)."""
    while True:
        inner = getattr(exc, "exceptions", None)  # AMQPConnectionWorkflowFailed: one per attempt
        if inner:
            exc = inner[-1]
        elif getattr(exc, "exception", None) is not None:  # AMQPConnectorException wrappers
            exc = exc.exception  # type: ignore[attr-defined]
        elif isinstance(exc, pe.AMQPConnectionError) and exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            return exc
