"""``connect(url)`` and the :class:`Broker` every application is written against."""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from bridgeq import wire
from bridgeq.capabilities import Capabilities
from bridgeq.errors import ClosedError, ConfigError, MessageTooLarge
from bridgeq.message import MAX_ID_LENGTH, Body, Message
from bridgeq.metrics import Meter
from bridgeq.names import check_name
from bridgeq.options import parse_options
from bridgeq.registry import load
from bridgeq.spi import Backend, Totals
from bridgeq.subscription import Subscription
from bridgeq.url import BrokerURL, resolve

DEFAULT_PREFETCH = 100
DEFAULT_MAX_DELIVERIES = 5
CLOSE_WORKERS = 16
"""Subscriptions a broker's close closes at once: each may wait out its timeout when the broker is unreachable."""


def connect(url: str | BrokerURL | None = None) -> Broker:
    """A broker for ``url``; None means ``$BRIDGEQ_URL``, then ``memory://``.

    Raises ConfigError for a bad URL or option, before any connection is made.
    """
    parsed = resolve(url)
    backend_type = load(parsed.scheme)
    options: object = parse_options(backend_type.options_type, parsed.options, parsed.scheme)
    return Broker(backend_type(parsed, options), parsed)


class Broker:
    """Publish to topics and subscribe to them as a group member. Safe to share between threads."""

    def __init__(self, backend: Backend, url: BrokerURL) -> None:
        self.backend = backend
        self.url = url
        self.meter = Meter()
        self._closed = False
        self._lock = threading.Lock()
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    @property
    def capabilities(self) -> Capabilities:
        """What this broker promises (see :class:`Capabilities`)."""
        return self.backend.capabilities

    def declare(self, topic: str, group: str | None = None) -> None:
        """Make ``topic`` (and ``group``) exist; the group then gets every later message. Idempotent."""
        self._check_open()
        check_name("topic", topic)
        if group is not None:
            check_name("group", group)
        self.backend.declare(topic, group)

    def publish(
        self,
        topic: str,
        body: Body = b"",
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        id: str | None = None,  # noqa: A002 - the public name of the field
    ) -> str:
        """Publish one message; returns its id once the broker has accepted it."""
        return self.publish_batch(topic, [Message(body, headers, key, id)])[0]

    def publish_batch(self, topic: str, messages: Iterable[Message | Body]) -> list[str]:
        """Publish many messages in order; returns their ids once the broker accepted all.

        Every message is checked before any is sent. Not atomic: on PublishError the
        messages it does not name were accepted.
        """
        return self.begin_batch(topic, messages)()

    def begin_batch(self, topic: str, messages: Iterable[Message | Body]) -> Callable[[], list[str]]:
        """:meth:`publish_batch` in two steps: check the messages and hand them to the broker now; the
        function returned waits until the broker accepted all and returns their ids (or raises as
        ``publish_batch`` does). Batches begun one after the other keep that order, so the next may
        be begun while the broker still confirms this one (Kafka sends meanwhile; others confirm here).
        """
        batch = self.checked(topic, messages)
        if not batch:
            return _no_ids
        confirm = self.backend.begin_publish(topic, batch)

        def confirmed() -> list[str]:
            confirm()
            self.meter.count_published(topic, len(batch))
            return [m.id for m in batch]

        return confirmed

    def checked(self, topic: str, messages: Iterable[Message | Body]) -> list[Message]:
        """``messages`` as :class:`Message` objects, ready to send to ``topic``.

        Raises (before anything is sent) if the broker is closed, the topic name is
        bad, or a message is larger than the backend accepts.
        """
        self._check_open()
        check_name("topic", topic)
        batch = [m if type(m) is Message else _as_message(m) for m in messages]
        if not batch:
            return batch
        limit = self.backend.capabilities.max_message_size
        if max(map(len, map(_body, batch))) + MAX_ID_LENGTH > limit or any(map(_has_extras, batch)):
            for message in batch:  # the exact count, only where the quick bound is not enough
                if message.size() > limit:
                    raise MessageTooLarge(
                        f"message {message.id!r} is {message.size()} bytes; "
                        f"{self.url.scheme}:// accepts at most {limit} (body, id, key and headers)"
                    )
        return batch

    def subscribe(
        self,
        topic: str,
        group: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter_topic: str | None = None,
        ack_batch: int | None = None,
        read_ahead: bool = False,
    ) -> Subscription:
        """Join ``group`` on ``topic`` (declaring both). Close the subscription, or use ``with``.

        ``prefetch`` bounds deliveries held unacked; after ``max_deliveries`` attempts a
        message moves to ``dead_letter_topic`` (default ``<topic>.<group>.dlq``);
        None means redeliver forever. Acks are sent in batches of ``ack_batch``
        (default: prefetch), before the next fetch, or within 50 ms. With ``read_ahead``,
        the next batch is asked for while this one is handled, within prefetch (Redis: one
        XREADGROUP kept in flight; RabbitMQ and Kafka deliver ahead anyway): for a consumer
        that reads continuously; others in the group then find those messages taken.
        """
        self._check_open()
        check_name("topic", topic)
        check_name("group", group)
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch must be a positive int, got {prefetch!r}")
        if max_deliveries is not None and (not isinstance(max_deliveries, int) or max_deliveries < 1):
            raise ConfigError(f"max_deliveries must be a positive int or None, got {max_deliveries!r}")
        dead_letters = dead_letter_topic or wire.dead_letter_topic(topic, group)
        check_name("dead-letter topic", dead_letters)
        consumer = self.backend.consumer(topic, group, prefetch)
        subscription = Subscription(
            self,
            consumer,
            topic,
            group,
            prefetch=prefetch,
            max_deliveries=max_deliveries,
            dead_letter_topic=dead_letters,
            ack_batch=ack_batch or prefetch,
            read_ahead=bool(read_ahead),
        )
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def forget(self, subscription: Subscription) -> None:
        """Called by a subscription as it closes."""
        with self._lock:
            self._subscriptions.discard(subscription)

    def depth(self, topic: str, group: str) -> int | None:
        """L: messages waiting for ``group`` (unacked included), or None where unknown."""
        self._check_open()
        check_name("topic", topic)
        check_name("group", group)
        self._flush(topic, group)
        return self.backend.depth(topic, group)

    def totals(self, topic: str, group: str) -> Totals | None:
        """Running (published, settled) counts for rates, or None where the broker cannot tell."""
        self._check_open()
        self._flush(topic, group)
        return self.backend.totals(check_name("topic", topic), check_name("group", group))

    def delete(self, topic: str) -> None:
        """Remove ``topic`` with its groups and messages. Idempotent."""
        self._check_open()
        self.backend.delete(check_name("topic", topic))

    def _flush(self, topic: str, group: str) -> None:
        with self._lock:
            subscriptions = [s for s in self._subscriptions if s.topic == topic and s.group == group]
        for subscription in subscriptions:
            if not subscription.closed:
                subscription.flush()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"broker {self.url} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every subscription, then the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        outcomes = _close_all(subscriptions)
        self.backend.close()
        failures = [outcome for outcome in outcomes if outcome is not None]
        if failures:
            raise failures[0]

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<bridgeq.Broker {self.url}{' closed' if self._closed else ''}>"


def _close_all(subscriptions: list[Subscription]) -> list[Exception | None]:
    """Close them all at once (each may wait out its timeout in an outage); one by one where no thread can
    start (an atexit handler: the interpreter is shutting down). What went wrong, for each."""
    if len(subscriptions) > 1:
        try:
            with ThreadPoolExecutor(min(len(subscriptions), CLOSE_WORKERS), "bridgeq-close") as closing:
                return list(closing.map(_closed, subscriptions))
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            pass
    return [_closed(subscription) for subscription in subscriptions]


def _closed(subscription: Subscription) -> Exception | None:
    """Close ``subscription``; what went wrong, if anything (the others, and the connection, close all the same)."""
    try:
        subscription.close()
    except Exception as exc:
        return exc
    return None


_body = operator.attrgetter("body")


def _has_extras(message: Message) -> bool:
    return bool(message.headers) or message.key is not None


def _as_message(item: object) -> Message:
    if isinstance(item, Message):
        return item
    return Message(item)  # type: ignore[arg-type]


def _no_ids() -> list[str]:
    """An empty batch, confirmed at once."""
    return []
