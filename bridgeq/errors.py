"""The bridgeq error tree.

Every error bridgeq raises derives from :class:`BridgeqError`, so one
``except bridgeq.BridgeqError`` is enough::

    BridgeqError
    ├── ConfigError           bad URL, option, name or argument; nothing was sent
    │   └── MessageTooLarge   a message exceeds the backend's max_message_size
    ├── ConnectionLost        the broker went away or could not be reached
    ├── PublishError          the broker did not confirm a message
    ├── UnsupportedFeature    asked for what the backend's capabilities lack
    ├── ClosedError           used a broker or subscription after close()
    └── DeliveryStateError    a delivery settled twice in conflicting ways

Messages never contain passwords: URLs are always shown redacted.
"""

from __future__ import annotations


class BridgeqError(Exception):
    """Base class of every error bridgeq raises."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigError(BridgeqError, ValueError):
    """A URL, option, name or argument is invalid; raised before anything is sent."""


class MessageTooLarge(ConfigError):
    """A message is larger than the backend accepts; raised before anything is sent."""


class ConnectionLost(BridgeqError):
    """The broker could not be reached, or the connection to it was lost."""


class PublishError(BridgeqError):
    """The broker did not confirm a message (nacked, returned or timed out).

    ``message_ids`` names the messages whose fate is unknown or negative; every
    other message of the same call was confirmed.
    """

    def __init__(self, message: str, message_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message_ids = message_ids


class UnsupportedFeature(BridgeqError):
    """The backend's capabilities do not include what was asked for."""


class ClosedError(BridgeqError):
    """The broker or subscription was used after it was closed."""


class DeliveryStateError(BridgeqError):
    """A delivery was settled twice in conflicting ways (ack after nack, ...)."""
