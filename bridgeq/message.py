"""Messages going out (:class:`Message`) and coming in (:class:`Delivery`)."""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Callable, Generator, Mapping
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, cast

from bridgeq.errors import ClosedError, ConfigError, DeliveryStateError
from bridgeq.wire import RESERVED_HEADERS

Body: TypeAlias = "bytes | bytearray | memoryview | str"
Headers: TypeAlias = "Mapping[str, str]"

EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})
MAX_ID_LENGTH = 200

_id_prefix = ""
_id_counter: itertools.count[int] = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(10).hex() + "-"
    _id_counter = itertools.count(1)


_reseed_ids()
os.register_at_fork(after_in_child=_reseed_ids)


def new_id() -> str:
    """A new message id, unique across processes: 80 random bits for this process, then a counter."""
    return _id_prefix + str(next(_id_counter))


def coerce_body(body: object) -> bytes:
    """``body`` as bytes: bytes-like values as they are, ``str`` as UTF-8."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise ConfigError(f"message body must be bytes or str, not {type(body).__name__}")


def check_headers(headers: object) -> Mapping[str, str]:
    """A private copy of ``headers`` after checking it maps str to str."""
    if not isinstance(headers, Mapping):
        raise ConfigError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    if not headers:
        return EMPTY_HEADERS
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"header names must be non-empty str, got {name!r}")
        if not isinstance(value, str):
            raise ConfigError(f"header {name!r} must be a str, not {type(value).__name__}")
        if name in RESERVED_HEADERS:
            raise ConfigError(f"header {name!r} is reserved for the message id; pass id= instead")
    return dict(headers)


def check_id(message_id: object) -> str:
    """``message_id`` if it is a usable id: 1 to 200 printable characters."""
    if (
        not isinstance(message_id, str)
        or not message_id
        or len(message_id) > MAX_ID_LENGTH
        or not message_id.isprintable()
    ):
        raise ConfigError(f"message id must be 1 to {MAX_ID_LENGTH} printable characters, got {message_id!r:.60}")
    return message_id


class Message:
    """An outgoing message: body, headers, routing key and id.

    ``body`` is bytes (a ``str`` is encoded as UTF-8); ``headers`` map str to str;
    ``key`` orders messages (same key, same order) where the broker can; ``id`` is
    generated when not given and travels unchanged through every broker.
    """

    __slots__ = ("body", "headers", "id", "key")

    body: bytes
    headers: Mapping[str, str]
    key: str | None
    id: str

    def __init__(
        self,
        body: Body = b"",
        headers: Headers | None = None,
        key: str | None = None,
        id: str | None = None,  # noqa: A002 - the public name of the field
    ) -> None:
        self.body = body if type(body) is bytes else coerce_body(body)
        self.headers = EMPTY_HEADERS if headers is None else check_headers(headers)
        if key is not None and type(key) is not str:
            raise ConfigError(f"message key must be a str or None, not {type(key).__name__}")
        self.key = key
        self.id = _id_prefix + str(next(_id_counter)) if id is None else check_id(id)

    @classmethod
    def unchecked(cls, id: str, body: bytes, headers: Mapping[str, str], key: str | None) -> Message:  # noqa: A002
        """A message from parts already checked (a delivery's, or one sent between processes)."""
        message = cls.__new__(cls)
        message.id, message.body, message.headers, message.key = id, body, headers, key
        return message

    def size(self) -> int:
        """Bytes this message counts against a backend's ``max_message_size``."""
        size = len(self.body) + len(self.id)
        if self.key:
            size += len(self.key.encode("utf-8"))
        for name, value in self.headers.items():
            size += len(name.encode("utf-8")) + len(value.encode("utf-8"))
        return size

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, key={self.key!r}, headers={dict(self.headers)!r}, body={self.body[:40]!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.id, self.body, self.key, dict(self.headers)) == (
            other.id,
            other.body,
            other.key,
            dict(other.headers),
        )

    __hash__ = None  # type: ignore[assignment]


class Settlement(enum.Enum):
    """Where a delivery stands; the first settlement wins, a conflicting one raises."""

    PENDING = "pending"
    ACKED = "acked"
    REQUEUED = "requeued"
    DEAD_LETTERED = "dead-lettered"


# Module constants: looking an enum member up on its class is slow on CPython 3.11's hot paths.
PENDING = Settlement.PENDING
ACKED = Settlement.ACKED
REQUEUED = Settlement.REQUEUED
DEAD_LETTERED = Settlement.DEAD_LETTERED


class Settler(Protocol):
    """What a delivery reports its settlement to (the core's subscription)."""

    def settle(self, delivery: Delivery, outcome: Settlement, reason: str) -> None: ...

    def ack_one(self, delivery: Delivery) -> None: ...


class Settled:
    """What ``ack()`` and ``nack()`` return: nothing to wait for, yet awaitable, so that
    ``await delivery.ack()`` in asyncio code and ``delivery.ack()`` in threads are one API."""

    __slots__ = ()

    # ``await`` calls this and gets back an exhausted iterator: it ends at once, nothing allocated
    __await__ = cast("Callable[[Settled], Generator[None, None, None]]", iter(()).__iter__)

    def __repr__(self) -> str:
        return "<bridgeq settled>"


SETTLED = Settled()


class Delivery:
    """An incoming message, to be acked once processed.

    ``attempt`` counts deliveries of this message to the group, from 1.
    ``ack()`` and ``nack()`` are non-blocking, may be called from any thread,
    and repeating the same one is a no-op; a conflicting one raises
    :class:`DeliveryStateError`. Both may be awaited (``await d.ack()``) in
    asyncio code. ``token`` belongs to the backend.
    """

    __slots__ = (
        "attempt",
        "body",
        "group",
        "headers",
        "id",
        "key",
        "settler",
        "state",
        "token",
        "topic",
    )

    def __init__(
        self,
        id: str,  # noqa: A002 - the public name of the field
        body: bytes,
        headers: Mapping[str, str],
        key: str | None,
        topic: str,
        group: str,
        attempt: int,
        token: Any = None,
    ) -> None:
        self.id = id
        self.body = body
        self.headers = headers
        self.key = key
        self.topic = topic
        self.group = group
        self.attempt = attempt
        self.token = token
        self.state = PENDING
        self.settler: Settler | None = None

    @property
    def redelivered(self) -> bool:
        """True when this message was delivered to the group before."""
        return self.attempt > 1

    def ack(self) -> Settled:
        """Mark the message processed; the broker will not deliver it to this group again."""
        settler = self.settler
        if self.state is PENDING and settler is not None:
            settler.ack_one(self)
        else:
            self._settle(ACKED, "")
        return SETTLED

    def nack(self, requeue: bool = True, reason: str = "") -> Settled:
        """Give the message back: delivered again (``requeue``) or moved to the dead-letter topic."""
        self._settle(REQUEUED if requeue else DEAD_LETTERED, reason or "nacked")
        return SETTLED

    def _settle(self, outcome: Settlement, reason: str) -> None:
        if self.state is not PENDING:
            if self.state is outcome:
                return
            raise DeliveryStateError(
                f"delivery {self.id!r} is already {self.state.value}; cannot mark it {outcome.value}"
            )
        if self.settler is None:
            raise ClosedError(f"delivery {self.id!r} does not belong to a subscription")
        self.settler.settle(self, outcome, reason)

    def to_message(self, headers: Mapping[str, str] | None = None) -> Message:
        """This delivery as an outgoing message with the same id, body, key and headers."""
        return Message.unchecked(self.id, self.body, dict(self.headers) if headers is None else headers, self.key)

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.id!r}, topic={self.topic!r}, group={self.group!r}, "
            f"attempt={self.attempt}, state={self.state.value}, key={self.key!r}, body={self.body[:40]!r})"
        )
