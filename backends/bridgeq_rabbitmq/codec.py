"""Messages to AMQP basic.publish arguments and deliveries back (the layout is in the package docstring)."""

from __future__ import annotations

import datetime
import decimal
import json
import os
from collections.abc import Mapping
from typing import Any

from pika.spec import BasicProperties

from bridgeq.errors import ConfigError
from bridgeq.spi import Delivery, Message
from bridgeq.wire import AMQP_ID_HEADER, CONTENT_TYPE_HEADER, ID_HEADER

__all__ = ["decode", "encode"]

PERSISTENT = 2
SHORTSTR = 255
DELIVERY_COUNT = "x-delivery-count"
FOREIGN_ID_PREFIX = "amqp-"
_SKIPPED = frozenset({DELIVERY_COUNT, AMQP_ID_HEADER, ID_HEADER})


def encode(message: Message, persistent: bool = True) -> tuple[str, bytes, BasicProperties]:
    """(routing key, body, properties) for ``message``; ConfigError if AMQP cannot carry it."""
    key = message.key or ""
    if len(key.encode()) > SHORTSTR:
        raise ConfigError(f"message {message.id!r}: AMQP routing keys (the key) are at most {SHORTSTR} bytes")
    headers: dict[str, Any] = dict(message.headers)
    headers[AMQP_ID_HEADER] = message.id
    content_type = headers.get(CONTENT_TYPE_HEADER)
    if content_type is not None and len(content_type.encode()) <= SHORTSTR:
        del headers[CONTENT_TYPE_HEADER]
    else:
        content_type = None
    for name in headers:
        if len(name.encode()) > SHORTSTR:
            raise ConfigError(f"message {message.id!r}: AMQP header names are at most {SHORTSTR} bytes")
    properties = BasicProperties(
        content_type=content_type,
        delivery_mode=PERSISTENT if persistent else None,
        message_id=message.id if len(message.id.encode()) <= SHORTSTR else None,
        headers=headers,
    )
    return key, message.body, properties


def decode(
    topic: str, group: str, routing_key: str, redelivered: bool, properties: BasicProperties, body: bytes, token: object
) -> Delivery:
    """The delivery of one basic.deliver; foreign messages (no cloudEvents_id) are read too."""
    table: Mapping[str, Any] = properties.headers or {}
    headers = {name: _text(value) for name, value in table.items() if name not in _SKIPPED}
    if properties.content_type is not None:
        headers[CONTENT_TYPE_HEADER] = properties.content_type
    message_id = table.get(AMQP_ID_HEADER) or table.get(ID_HEADER) or properties.message_id
    if not isinstance(message_id, str) or not message_id:
        message_id = FOREIGN_ID_PREFIX + os.urandom(16).hex()  # no stable position exists in AMQP
    count = table.get(DELIVERY_COUNT)
    attempt = count + 1 if isinstance(count, int) and count >= 0 else 2 if redelivered else 1
    return Delivery(message_id, body, headers, routing_key or None, topic, group, attempt, token)


def _text(value: Any) -> str:
    """A header value as str, for tables written by other clients."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (int, float, decimal.Decimal)):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)
