"""bridgeq on RabbitMQ (AMQP 0-9-1, through pika): ``amqp://`` and ``amqps://`` URLs.

``amqp://user:password@host:5672/vhost?heartbeat=30`` (vhost ``/`` is ``%2F``; none
given means ``/``; user and password default to guest/guest). Options: see
:class:`~bridgeq_rabbitmq.options.RabbitMQOptions`.

Mapping and wire layout (other AMQP clients read and write it):

- topic ``T`` -> a durable **fanout** exchange ``{prefix}T`` (prefix ``bridgeq.`` by
  default; ``?prefix=`` addresses existing exchanges as they are). Fanout copies
  every message to every bound queue whatever its routing key, which is exactly
  "every group gets every message", and leaves the routing key free to carry the
  key. ``?exchange_type=topic`` reads an existing topic exchange (groups bind ``#``).
- group ``G`` -> a durable **quorum** queue ``{prefix}T:G`` bound to it (``?queue_name=``
  changes the pattern). Quorum queues count deliveries (``x-delivery-count``,
  absent on the first), so ``attempt`` is exact, crashes included. With
  ``?queue_type=classic`` only the ``redelivered`` flag exists: attempt is 1, or 2 for
  every redelivery, and ``exact_delivery_count`` is False.
- a message -> ``basic.publish`` with ``delivery_mode=2`` (persistent), body as is,
  routing key = the key ("" when none; read back as None), ``message_id`` = the id
  (omitted if longer than 255 bytes), headers table = the headers (str -> str) plus
  ``cloudEvents_id`` = the id; a ``content-type`` header travels as the
  ``content_type`` property.
- reading: the id is ``cloudEvents_id``, else ``ce_id``, else ``message_id``; a message
  with none of them (published by a plain client) has no stable position in AMQP, so
  it gets a fresh random id ``amqp-<32 hex>`` per delivery (``stable_foreign_ids`` is
  False): a digest of the content would give two identical messages one id, and
  deduplicating on it would lose one. Header values other than str are written as
  text (bytes as UTF-8, numbers with ``str``, booleans as true/false, tables as JSON);
  ``x-delivery-count`` becomes ``attempt``; other properties are not mapped.

Behaviour:

- publish waits for publisher confirms (``?confirm=false`` turns them off) with every
  message of every concurrent call in flight at once (see :mod:`bridgeq_rabbitmq.link`);
  a nack, or with ``?mandatory=true`` a message no queue takes (basic.return), is a
  PublishError naming it. While the connection is down, publish waits up to
  ``publish_timeout`` for the reconnection; messages in flight when it drops raise
  :class:`PublishConnectionLost` (a PublishError and a ConnectionLost): fate unknown.
- one I/O thread per backend owns the connection: it sends heartbeats however long a
  handler runs, and reconnects with backoff (0.1 s doubling to 5 s) after a loss;
  consumers resubscribe by themselves, their fetch() raises ConnectionLost once per
  loss (and while disconnected), and acks of deliveries from a lost connection raise
  ConnectionLost (the broker delivers those messages again).
- ``depth`` = the queue's ready count (passive ``queue.declare``; for quorum queues too,
  ready only) + the deliveries held unacked by this process's consumers. AMQP 0-9-1 cannot
  count unacked messages held by other connections (only the management plugin can),
  and while consumers are active the two halves move separately: exact when quiet.
- ``delete`` removes the exchange and the group queues declared by this process (AMQP
  cannot list an exchange's bindings); a subscription open while its queue is deleted
  resubscribes, declaring it again. ``totals`` is not available (None).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Generator, Sequence
from typing import Any

from pika import ConnectionParameters, PlainCredentials, SSLOptions
from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker

from bridgeq.errors import ConfigError, PublishError
from bridgeq.spi import Backend, BackendConsumer, BrokerURL, Capabilities, Message, translate_errors

from .codec import encode
from .consumer import RabbitMQConsumer
from .errors import ERRORS, PublishConnectionLost
from .link import Batch, Link, Step
from .options import RabbitMQOptions

__all__ = ["PublishConnectionLost", "RabbitMQBackend", "RabbitMQConsumer", "RabbitMQOptions"]

_known_queues: dict[tuple[Any, ...], set[str]] = {}
"""(server, vhost, exchange) -> queues declared by this process, so delete() removes them."""
_known_lock = threading.Lock()


class RabbitMQBackend(Backend):
    options_type = RabbitMQOptions

    def __init__(self, url: BrokerURL, options: object) -> None:
        assert isinstance(options, RabbitMQOptions)
        self._options = options
        self._url = url
        self._server = (tuple(url.hosts), url.path or "/")
        self.capabilities = Capabilities(
            consumer_groups=True,
            persistent=True,
            replay=False,
            ordered_per_key=True,
            crash_redelivery=True,
            crash_redelivery_seconds=max(2.0, 2.0 * options.heartbeat),
            exact_delivery_count=options.queue_type == "quorum",
            depth=True,
            max_message_size=options.max_message_size,
            stable_foreign_ids=False,
        )
        params = _parameters(url, options)
        self._link = Link(params, options.confirm, options.connect_timeout)
        try:
            with translate_errors(ERRORS, f"connecting to {url}"):
                self._link.wait(self._link.opened, options.connect_timeout)
        except BaseException:
            self._link.close()
            raise

    # -- names -----------------------------------------------------------------------------

    def _exchange(self, topic: str) -> str:
        return self._options.prefix + topic

    def _queue(self, topic: str, group: str) -> str:
        return self._options.queue_name.format(prefix=self._options.prefix, topic=topic, group=group)

    def _declare(self, channel: Channel, topic: str, group: str | None) -> Generator[Step, Any, None]:
        exchange, options = self._exchange(topic), self._options
        yield lambda done: channel.exchange_declare(exchange, options.exchange_type, durable=True, callback=done)
        if group is not None:
            queue = self._queue(topic, group)
            arguments = {"x-queue-type": "quorum"} if options.queue_type == "quorum" else None
            yield lambda done: channel.queue_declare(queue, durable=True, arguments=arguments, callback=done)
            binding = "#" if options.exchange_type == "topic" else ""
            yield lambda done: channel.queue_bind(queue, exchange, routing_key=binding, callback=done)
            with _known_lock:
                _known_queues.setdefault((*self._server, exchange), set()).add(queue)

    def _run(self, context: str, op: Any, timeout: float | None = None) -> Any:
        with translate_errors(ERRORS, context):
            return self._link.run(op, timeout or self._options.connect_timeout)

    # -- the contract ----------------------------------------------------------------------

    def declare(self, topic: str, group: str | None, timeout: float | None = None) -> None:
        self._run(f"declaring {topic!r}", lambda channel: self._declare(channel, topic, group), timeout)
        self._link.exchanges.add(self._exchange(topic))

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        exchange = self._exchange(topic)
        items = [encode(message) for message in messages]  # ConfigError before anything is sent
        if exchange not in self._link.exchanges:  # once per connection: publish to a missing exchange fails
            self.declare(topic, None, self._options.publish_timeout)
        batch = Batch(exchange, items, self._options.mandatory)
        with translate_errors(ERRORS, f"publishing to {topic!r}"):
            failed = self._link.publish(batch, self._options.publish_timeout)
        if failed:
            failed.sort()
            ids = tuple(messages[index].id for index, _ in failed)
            error = PublishConnectionLost if batch.lost else PublishError
            raise error(
                f"{len(ids)} of {len(messages)} message(s) to {topic!r} not confirmed "
                f"(first {ids[0]!r}: {failed[0][1]})",
                ids,
            )

    def consumer(self, topic: str, group: str, prefetch: int) -> BackendConsumer:
        with translate_errors(ERRORS, f"subscribing to {topic!r} as {group!r}"):
            return RabbitMQConsumer(
                self._link,
                topic,
                group,
                self._queue(topic, group),
                lambda channel: self._declare(channel, topic, group),
                self._options.prefetch or prefetch,
            )

    def depth(self, topic: str, group: str) -> int | None:
        queue, link = self._queue(topic, group), self._link

        def op(channel: Channel) -> Generator[Step, Any, int]:
            mine = [c for c in list(link.listeners) if c.queue == queue]
            for consumer in mine:
                consumer.io_flush()  # settlements the core handed over count now
            try:
                frame = yield lambda done: channel.queue_declare(queue, passive=True, callback=done)
            except ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return 0
                raise
            return int(frame.method.message_count) + sum(c.unacked for c in mine)

        return int(self._run(f"reading the depth of {queue!r}", op))

    def delete(self, topic: str) -> None:
        exchange = self._exchange(topic)
        key = (*self._server, exchange)
        with _known_lock:
            queues = sorted(_known_queues.get(key, ()))

        def op(channel: Channel) -> Generator[Step, Any, None]:
            for queue in queues:
                yield _deleting(channel, queue)
            yield lambda done: channel.exchange_delete(exchange, callback=done)

        self._link.exchanges.discard(exchange)
        self._run(f"deleting {topic!r}", op)
        with _known_lock:  # forgotten once deleted: a delete that failed may be called again
            left = _known_queues.get(key, set()) - set(queues)
            if left:
                _known_queues[key] = left
            else:
                _known_queues.pop(key, None)

    def close(self) -> None:
        self._link.close()

    def __repr__(self) -> str:
        return f"<RabbitMQBackend {self._url}>"


def _deleting(channel: Channel, queue: str) -> Step:
    return lambda done: channel.queue_delete(queue, callback=done)


def _parameters(url: BrokerURL, options: RabbitMQOptions) -> list[ConnectionParameters]:
    """pika's parameters for each host of the URL; ConfigError for bad TLS settings."""
    tls = url.scheme == "amqps"
    if not tls and (options.ca_file or options.cert_file):
        raise ConfigError("options 'ca_file' and 'cert_file' need an amqps:// URL")
    context = None
    if tls:
        try:
            context = ssl.create_default_context(cafile=options.ca_file)
            if options.cert_file:
                context.load_cert_chain(options.cert_file, options.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS files given in the URL: {exc}") from None
        if not options.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if url.username is None and url.password is None:
        credentials = PlainCredentials("guest", "guest")
    else:
        credentials = PlainCredentials(url.username or "", url.password or "")
    hosts = url.hosts or ()
    if not hosts:
        raise ConfigError("amqp:// URLs need a host, e.g. amqp://guest:guest@localhost:5672/%2F")
    return [
        ConnectionParameters(
            host=host.name,
            port=host.port or (5671 if tls else 5672),
            virtual_host=url.path or "/",
            credentials=credentials,
            heartbeat=options.heartbeat,
            ssl_options=SSLOptions(context, server_hostname=host.name) if context else None,
            connection_attempts=1,
            socket_timeout=options.connect_timeout,
            stack_timeout=options.connect_timeout,
            # blocked by a resource alarm this long: closed (what it held unread is dropped, as publish
            # reported) and opened again, so acks and consumers are not held up behind a blocked publish
            blocked_connection_timeout=options.publish_timeout,
            client_properties={"connection_name": "bridgeq"},
        )
        for host in hosts
    ]
