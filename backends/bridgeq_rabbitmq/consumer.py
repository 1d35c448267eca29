"""One member of a group: basic.consume on a channel of its own, deliveries buffered for fetch()."""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any

from pika.channel import Channel
from pika.spec import BasicProperties

from bridgeq.errors import BridgeqError, ClosedError, ConfigError, ConnectionLost
from bridgeq.spi import BackendConsumer, Delivery

from .codec import decode
from .errors import cause, refusal
from .link import MAX_BACKOFF, Link, Step

__all__ = ["RabbitMQConsumer"]

log = logging.getLogger("bridgeq.rabbitmq")

LINGER = 0.02
"""Settlements wait at most this long before they are sent; the next fetch() or close() sends them
at once. close() cancels the consumer *before* sending them: an ack sent first would let the broker
push replacements to the closing consumer, and returning those counts a delivery (x-delivery-count)
that no application ever saw; repeated open-ack-close cycles would walk messages to the dead letters."""

_Item = tuple[int, int, bool, str, BasicProperties, bytes]


class RabbitMQConsumer(BackendConsumer):
    """fetch/ack/requeue/close from any thread (never overlapping); everything pika runs on the I/O thread."""

    def __init__(
        self,
        link: Link,
        topic: str,
        group: str,
        queue: str,
        declare: Callable[[Channel], Generator[Step, Any, None]],
        prefetch: int,
    ) -> None:
        self.topic, self.group, self.queue = topic, group, queue
        self.epoch = 0  # bumped whenever the channel changes; tokens of older epochs are stale
        self.unacked = 0  # delivered on the current channel and not yet settled (depth adds it)
        self._link, self._declare, self._prefetch = link, declare, prefetch
        self._inbox: SimpleQueue[list[_Item]] = SimpleQueue()  # one list per read from the socket
        self._arrived: list[_Item] = []  # I/O thread: deliveries of the current read, not yet in the inbox
        self._left: deque[_Item] = deque()  # fetched from the inbox beyond max_messages
        self._tag = "bridgeq-" + os.urandom(8).hex()
        self._closed = self._closing = self._opening = self._cancelled = False
        self._lost = False  # set on the I/O thread, reported once by fetch()
        self._channel: Channel | None = None
        self._outstanding: deque[int] = deque()  # delivery tags not settled at the broker, in order
        self._settled: set[int] = set()  # sent, but not yet at the head of _outstanding
        self._settlements: deque[tuple[int, int, bool]] = deque()  # (epoch, tag, requeue), any thread
        self._armed = False  # a linger timer will send the settlements
        self._delay = 0.1
        self._first: Future[None] = Future()
        self.refused: BridgeqError | None = None  # the broker refuses resubscribing (permissions, queue arguments)
        self._close_future: Future[None] | None = None
        link.listeners.add(self)
        try:
            link.submit(self._io_open)
            link.wait(self._first, link.connect_timeout)
        except BaseException:
            self.close()
            raise

    # -- the consumer's thread -------------------------------------------------------------

    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._settlements:
            self._link.submit(self._io_flush)
        left, inbox = self._left, self._inbox
        if not left and not self._lost:
            with contextlib.suppress(Empty):
                left.extend(inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait())
        while len(left) < max_messages:
            try:
                left.extend(inbox.get_nowait())
            except Empty:
                break
        if self._lost or (self._channel is None and not self._link.ready):  # before anything new
            self._lost = False
            raise ConnectionLost(
                f"lost the subscription to {self.topic!r} as {self.group!r} (connection lost, broker restarted "
                "or queue deleted); unacked deliveries will come again (resubscribing)"
            )
        if self.refused is not None and not left:  # for good, until someone changes the broker's setup
            raise ConfigError(f"{self.refused} (subscription to {self.topic!r} as {self.group!r}; still retrying)")
        items = [left.popleft() for _ in range(min(max_messages, len(left)))]
        epoch, topic, group = self.epoch, self.topic, self.group
        return [
            decode(topic, group, routing_key, redelivered, properties, body, (epoch, tag))
            for item_epoch, tag, redelivered, routing_key, properties, body in items
            if item_epoch == epoch
        ]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, requeue=False)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, requeue=True)

    def _settle(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        epoch = self.epoch
        settlements = self._settlements
        stale = 0
        for delivery in deliveries:
            token = delivery.token
            if token[0] == epoch:
                settlements.append((epoch, token[1], requeue))
            else:
                stale += 1
        if settlements and not self._armed:
            self._armed = True
            self._link.submit(lambda: self._link.loop.call_later(LINGER, self._io_flush))
        if stale:
            raise ConnectionLost(
                f"{stale} deliveries came over a connection or channel that was lost; the broker delivers them again"
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        future: Future[None] = Future()
        try:
            self._link.submit(lambda: self._io_close(future))
            future.result(self._link.connect_timeout)
        except (ClosedError, TimeoutError):
            pass
        finally:
            self._link.listeners.discard(self)

    # -- the I/O thread --------------------------------------------------------------------

    def _io_open(self) -> None:
        if self._closing or self._opening or self._channel is not None:
            return
        self._opening = True
        opened: Future[None] = Future()
        opened.add_done_callback(self._io_opened)
        self._link.when_ready(lambda: self._link.start_op(self._consume, opened, self._io_closed))

    def _consume(self, channel: Channel) -> Generator[Step, Any, None]:
        yield from self._declare(channel)
        yield lambda done: channel.basic_qos(prefetch_count=self._prefetch, callback=done)
        if self._closing:  # given up while it opened (a subscribe that timed out): consume nothing
            channel.close()
            return
        self.epoch += 1
        self._channel, self.unacked = channel, 0
        self._outstanding.clear()
        self._settled.clear()
        channel.add_on_cancel_callback(self._io_cancelled)
        yield lambda done: channel.basic_consume(self.queue, self._io_deliver, consumer_tag=self._tag, callback=done)

    def _io_opened(self, opened: Future[None]) -> None:
        self._opening = False
        error = opened.exception() if not opened.cancelled() else ConnectionLost("cancelled")
        if error is not None and self._channel is not None and not self._channel.is_open:
            self._channel = None
        if not self._first.done():
            if error is None:
                self._first.set_result(None)
            else:
                self._first.set_exception(error)
                self._closing = True
        elif error is not None and not self._closing:
            self.refused = error if isinstance(error, ConfigError) else refusal(cause(error), "resubscribing")
            log.warning("resubscribing to %s failed: %s; trying again in %.1f s", self.queue, error, self._delay)
            self._link.loop.call_later(self._delay, self._io_open)
            self._delay = min(MAX_BACKOFF, self._delay * 2)
            return
        else:
            self._delay, self.refused = 0.1, None
        if self._closing and self._channel is not None and self._channel.is_open:
            self._channel.close()

    def _io_deliver(self, channel: Channel, method: Any, properties: BasicProperties, body: bytes) -> None:
        tag = method.delivery_tag
        self._outstanding.append(tag)
        self.unacked += 1
        if not self._arrived:  # hand over everything of this read at once, after pika has parsed it
            self._link.loop.call_later(0, self._io_hand_over)
        self._arrived.append((self.epoch, tag, method.redelivered, method.routing_key, properties, body))

    def _io_hand_over(self) -> None:
        arrived, self._arrived = self._arrived, []
        self._inbox.put(arrived)

    def io_flush(self) -> None:
        """Send every settlement waiting (I/O thread): acks and requeues, each run in few frames."""
        self._armed = False
        settlements, epoch = self._settlements, self.epoch
        acks: list[int] = []
        requeues: list[int] = []
        while settlements:
            settled_epoch, tag, requeue = settlements.popleft()
            if settled_epoch == epoch:  # older ones: the broker gives them back by itself
                (requeues if requeue else acks).append(tag)
        if self._channel is None or not self._channel.is_open:
            return
        if acks:
            self._io_send(acks, requeue=False)
        if requeues:
            self._io_send(requeues, requeue=True)

    _io_flush = io_flush

    def _io_send(self, tags: list[int], requeue: bool) -> None:
        """One frame with ``multiple`` for the settled run at the head of the channel's unacked, one per other tag."""
        channel, outstanding, settled = self._channel, self._outstanding, self._settled
        assert channel is not None
        settled.update(tags)
        current = set(tags)
        last = 0  # the broker rejects a multiple-ack whose own tag was settled before: use one of ours
        while outstanding and outstanding[0] in settled:
            tag = outstanding.popleft()
            settled.discard(tag)
            if tag in current:
                last = tag
        for tag, multiple in ([(last, True)] if last else []) + [(t, False) for t in tags if t > last]:
            if requeue:
                channel.basic_nack(tag, multiple=multiple, requeue=True)
            else:
                channel.basic_ack(tag, multiple=multiple)
        self.unacked -= len(tags)

    def _io_cancelled(self, frame: Any) -> None:
        """The broker cancelled us (the queue was deleted): subscribe afresh, declaring it again."""
        self._cancelled = True
        if self._channel is not None and self._channel.is_open:
            self._channel.close()

    def _io_closed(self, channel: Channel, reason: BaseException) -> None:
        if channel is not self._channel:
            return
        self._channel, self.unacked = None, 0
        self.epoch += 1  # what waits in the inbox and what the application holds is now stale
        if self._closing:
            if self._close_future is not None and not self._close_future.done():
                self._close_future.set_result(None)
            return
        self._lost = True  # what the application holds can no longer be acked: say so once
        cancelled, self._cancelled = self._cancelled, False
        log.warning("subscription to %s ended: %s", self.queue, "cancelled by the broker" if cancelled else reason)
        if self._link.conn is not None and self._link.conn.is_open:
            self._link.loop.call_later(0 if cancelled else self._delay, self._io_open)

    def io_connected(self) -> None:
        self._io_open()

    def io_disconnected(self) -> None:
        if self._channel is not None:
            self._io_closed(self._channel, ConnectionLost("the connection was lost"))

    def _io_close(self, future: Future[None]) -> None:
        self._closing = True
        channel = self._channel
        if channel is None or not channel.is_open:
            future.set_result(None)
            return
        self._close_future = future
        channel.basic_cancel(self._tag)  # before the last acks: no replacements are pushed to us
        self._io_flush()
        channel.close()  # the broker returns every message still unacked
