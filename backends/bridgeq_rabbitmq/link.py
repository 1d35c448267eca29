"""The I/O thread: one pika SelectConnection, driven by one thread that alone touches pika.

Other threads hand it work with :meth:`Link.submit` and wait on futures. Publishing
keeps every message of every concurrent call in flight on one confirm-mode channel
and matches the broker's (multiple) acks and nacks to them by delivery tag.
Requests that need replies run as small generator "ops" on a channel of their own.
A lost connection fails what was in flight and is re-established with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pika import ConnectionParameters, SelectConnection
from pika.adapters.select_connection import IOLoop
from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic, BasicProperties

from bridgeq.errors import ClosedError, ConnectionLost
from bridgeq.wire import AMQP_ID_HEADER

from .errors import cause, refusal

__all__ = ["Batch", "Link", "Op", "Step"]

log = logging.getLogger("bridgeq.rabbitmq")

T = TypeVar("T")
Step = Callable[[Callable[[Any], None]], Any]
"""Starts one request on a channel; the op resumes with the reply passed to the callback."""
Op = Callable[[Channel], Generator[Step, Any, T]]
"""An op: a generator run on a fresh channel; it yields steps and returns its result."""

CHUNK = 500
"""Messages written per turn of the loop, so the socket drains and confirms come back meanwhile."""
MAX_BACKOFF = 5.0
ABORT_GRACE = 0.1
"""Seconds the I/O loop runs on after closing a connection that had not opened, so its socket is closed."""


class Batch:
    """One publish call: its messages, and how many are still unconfirmed."""

    __slots__ = ("done", "exchange", "failed", "future", "items", "lost", "mandatory", "pending", "returned")

    def __init__(self, exchange: str, items: list[tuple[str, bytes, BasicProperties]], mandatory: bool) -> None:
        self.exchange = exchange
        self.items = items
        self.mandatory = mandatory
        self.future: Future[list[tuple[int, str]]] = Future()
        self.pending = len(items)
        self.done = bytearray(len(items))
        self.failed: list[tuple[int, str]] = []
        self.returned: dict[int, str] = {}
        self.lost = False


class Link:
    """Owns the I/O thread and the connection; thread-safe through :meth:`submit`."""

    def __init__(self, params: list[ConnectionParameters], confirm: bool, connect_timeout: float) -> None:
        self._params = params
        self._confirm = confirm
        self.connect_timeout = connect_timeout
        self.loop = IOLoop()
        self.conn: SelectConnection | None = None
        self.ready = False
        self.exchanges: set[str] = set()  # declared since the publish channel opened
        self.listeners: set[Any] = set()  # consumers: told when the connection opens and closes
        self._calls: deque[Callable[[], None]] = deque()
        self._woken = False
        self._parked: list[Callable[[], None]] = []
        self._closing = False
        self._stopped = False
        self.blocked: str | None = None  # why the broker blocked the connection (a resource alarm), while it does
        self._attempts = 0
        self._fresh = False
        self.connections = 0  # opened so far: 1 + reconnections
        self._channel: Channel | None = None  # the publish channel
        self._tags: deque[int] = deque()  # unconfirmed delivery tags, in order
        self._unconfirmed: dict[int, tuple[Batch, int]] = {}
        self._next_tag = 1
        self.opened: Future[None] = Future()  # the first connection's outcome
        self._thread = threading.Thread(target=self._run, name="bridgeq-amqp-io", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------

    def submit(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the I/O thread soon; calls run in submission order."""
        if self._stopped:
            raise ClosedError("the AMQP connection is closed")
        self._calls.append(call)
        if not self._woken:
            self._woken = True
            self.loop.add_callback_threadsafe(self._drain)

    def run(self, op: Op[T], timeout: float, keep: Callable[[Channel, BaseException], None] | None = None) -> T:
        """Run ``op`` on a channel of its own and return its result; the channel is kept if ``keep``."""
        future: Future[T] = Future()
        self.submit(lambda: self.when_ready(lambda: self.start_op(op, future, keep)))
        return self.wait(future, timeout)

    def wait(self, future: Future[T], timeout: float) -> T:
        try:
            return future.result(timeout)
        except FutureTimeout:
            if future.cancel():
                raise ConnectionLost(f"not connected to the broker within {timeout:g} s") from None
            raise ConnectionLost(f"no answer from the broker within {timeout:g} s") from None

    def publish(self, batch: Batch, timeout: float) -> list[tuple[int, str]]:
        """Send ``batch``; (index, reason) of each message not confirmed."""
        self.submit(lambda: self.when_ready(lambda: self._io_publish(batch)))
        try:
            return batch.future.result(timeout)
        except FutureTimeout:
            if batch.future.cancel():  # never sent
                batch.lost = True
                return [(i, "not connected to the broker") for i in range(len(batch.items))]
            failed = list(batch.failed)
            reason = f"not confirmed within {timeout:g} s"
            if self.blocked is not None:
                reason += f" (the broker has blocked publishing: {self.blocked})"
            return failed + [(i, reason) for i, done in enumerate(batch.done) if not done]

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection and stop the I/O thread. Idempotent."""
        if self._stopped:
            return
        try:
            self.submit(self._io_close)
        except ClosedError:
            return
        self._thread.join(timeout)

    # -- the I/O thread --------------------------------------------------------------------

    def _run(self) -> None:
        self._connect()
        try:
            while True:
                try:
                    self.loop.start()
                    break
                except Exception:
                    log.exception("bridgeq's AMQP I/O thread: a callback failed")
        finally:
            self._stopped = True  # from now on submit() raises ClosedError
            self.ready = False
            self._calls.extend(self._parked)
            self._drain()  # every waiter gets its answer: calls fail fast on a stopped link
            self._fail_unconfirmed("the connection was closed")
            if not self.opened.done():
                self.opened.set_exception(ClosedError("the AMQP connection was closed"))

    def _drain(self) -> None:
        self._woken = False
        calls = self._calls
        while calls:
            try:
                calls.popleft()()
            except Exception:
                log.exception("bridgeq's AMQP I/O thread: a call failed")

    def when_ready(self, call: Callable[[], None]) -> None:
        """Run ``call`` now if connected, else once the connection (re)opens."""
        if self.ready:
            call()
        elif self._stopped or self._closing:
            call()  # it fails fast on a closed link
        else:
            self._parked.append(call)

    def _connect(self) -> None:
        if self._closing:  # a reconnection due after close() was asked for
            self.loop.stop()
            return
        params = self._params[self._attempts % len(self._params)]
        self._attempts += 1
        self.conn = SelectConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=self.loop,
        )
        self.conn.add_on_connection_blocked_callback(self._on_blocked)
        self.conn.add_on_connection_unblocked_callback(self._on_unblocked)

    def _on_open(self, conn: SelectConnection) -> None:
        self._fresh = True
        self.connections += 1
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Channel) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        if self._confirm:
            channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_ready(channel))
        else:
            self._on_ready(channel)

    def _on_ready(self, channel: Channel) -> None:
        if self._closing:  # opened after close() was asked for: close it again
            self._io_close()
            return
        self._channel, self._next_tag, self.ready, self._attempts = channel, 1, True, 0
        if not self.opened.done():
            self.opened.set_result(None)
        elif self._fresh:
            log.info("reconnected to the AMQP broker")
            for listener in list(self.listeners):
                listener.io_connected()
        self._fresh = False
        parked, self._parked = self._parked, []
        for call in parked:
            call()

    def _on_open_error(self, conn: SelectConnection, exc: BaseException) -> None:
        if self._closing:  # closed while it was opening (a connect that timed out, close() mid-reconnection)
            self.loop.stop()
            return
        if self.opened.done():
            self._reconnect_later(exc)
            return
        exc = cause(exc)
        refused = refusal(exc, "connecting")
        if refused is None and self._attempts < len(self._params):
            self._connect()  # the next host of the URL
            return
        self.opened.set_exception(refused or exc)
        self._io_close()

    def _on_closed(self, conn: SelectConnection, reason: BaseException) -> None:
        was_ready, self.ready, self._channel, self.blocked = self.ready, False, None, None
        self._fail_unconfirmed(f"the connection was lost: {reason}")
        for listener in list(self.listeners):
            listener.io_disconnected()
        if self._closing:
            self.loop.stop()
        else:
            if was_ready:
                log.warning("lost the AMQP connection: %s; reconnecting", reason)
            self._reconnect_later(reason)

    def _reconnect_later(self, reason: BaseException) -> None:
        delay = min(MAX_BACKOFF, 0.1 * 2 ** min(self._attempts, 8)) * random.uniform(0.5, 1.0)
        log.debug("connecting again in %.2f s after %s", delay, reason)
        self.loop.call_later(delay, self._connect)

    def _on_blocked(self, conn: SelectConnection, frame: Any) -> None:
        self.blocked = getattr(frame.method, "reason", "") or "a resource alarm"
        log.warning(
            "the AMQP broker blocked this connection (%s): publishing waits, and the connection is closed and "
            "opened again if it stays blocked past publish_timeout",
            self.blocked,
        )

    def _on_unblocked(self, conn: SelectConnection, frame: Any) -> None:
        self.blocked = None
        log.info("the AMQP broker unblocked this connection")

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        if channel is not self._channel:
            return
        self.ready, self._channel = False, None
        self.exchanges.clear()  # a 404 may mean an exchange was deleted under us
        by_broker = isinstance(reason, ChannelClosedByBroker)
        self._fail_unconfirmed(f"the publishing channel was closed: {reason}", lost=not by_broker)
        if self.conn is not None and self.conn.is_open and not self._closing:
            self.conn.channel(on_open_callback=self._on_channel)

    def _io_close(self) -> None:
        self._closing = True
        self.ready = False
        conn = self.conn
        if conn is not None and conn.is_open:
            conn.close()  # _on_closed stops the loop
        elif conn is not None and conn.is_closing:
            pass  # _on_closed, or _on_open_error, stops the loop
        else:
            if conn is not None and not conn.is_closed:  # still opening: abort it (pika may not call back)
                with contextlib.suppress(Exception):
                    conn.close()
            self.loop.call_later(ABORT_GRACE, self.loop.stop)  # time for the abort to close its socket

    # -- publishing (I/O thread) -----------------------------------------------------------

    def _io_publish(self, batch: Batch, start: int = 0) -> None:
        if start == 0 and not batch.future.set_running_or_notify_cancel():
            return
        channel = self._channel
        if channel is None or not self.ready:
            if self._closing or self._stopped:
                self._fail(batch, range(start, len(batch.items)), "the connection was closed", lost=True)
            else:  # lost between chunks: the rest waits for the reconnection
                self._parked.append(lambda: self._io_publish(batch, start))
            return
        items, exchange, mandatory = batch.items, batch.exchange, batch.mandatory
        end = min(start + CHUNK, len(items))
        confirm = self._confirm
        for index in range(start, end):
            routing_key, body, properties = items[index]
            if confirm:
                tag = self._next_tag
                self._next_tag = tag + 1
                self._unconfirmed[tag] = (batch, index)
                self._tags.append(tag)
            try:
                channel.basic_publish(exchange, routing_key, body, properties, mandatory)
            except Exception as exc:
                if confirm:
                    self._unconfirmed.pop(tag, None)
                self._fail(batch, range(index, len(items)), f"{type(exc).__name__}: {exc}", lost=True)
                return
            if not confirm:
                self._resolve(batch, index, None)
        self._coalesce()
        if end < len(items):
            self.loop.call_later(0, lambda: self._io_publish(batch, end))

    def _coalesce(self) -> None:
        """One buffer for pika's transport to send: pika queues each frame (three a message) for a
        send() of its own, and those syscalls were half of the I/O thread's time."""
        buffers = getattr(getattr(self.conn, "_transport", None), "_tx_buffers", None)
        if buffers is not None and len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        reason = None if isinstance(method, Basic.Ack) else "nacked by the broker"
        unconfirmed, tags = self._unconfirmed, self._tags
        if method.multiple:
            last = method.delivery_tag or self._next_tag
            while tags and tags[0] <= last:
                entry = unconfirmed.pop(tags.popleft(), None)
                if entry is not None:
                    self._resolve(entry[0], entry[1], reason)
        else:
            entry = unconfirmed.pop(method.delivery_tag, None)
            if entry is not None:
                self._resolve(entry[0], entry[1], reason)
            while tags and tags[0] not in unconfirmed:
                tags.popleft()

    def _on_return(self, channel: Channel, method: Any, properties: BasicProperties, body: bytes) -> None:
        """basic.return comes before the ack of the same message: mark the oldest match as failed."""
        message_id = (properties.headers or {}).get(AMQP_ID_HEADER)
        for tag in self._tags:
            entry = self._unconfirmed.get(tag)
            if entry is not None:
                batch, index = entry
                if index not in batch.returned and batch.items[index][2].headers[AMQP_ID_HEADER] == message_id:
                    batch.returned[index] = f"returned by the broker: {method.reply_code} {method.reply_text}"
                    return

    def _resolve(self, batch: Batch, index: int, reason: str | None) -> None:
        if reason is None and batch.returned:
            reason = batch.returned.get(index)
        if reason is not None:
            batch.failed.append((index, reason))
        batch.done[index] = 1
        batch.pending -= 1
        if batch.pending == 0 and not batch.future.done():
            batch.future.set_result(batch.failed)

    def _fail(self, batch: Batch, indexes: range, reason: str, lost: bool) -> None:
        batch.lost = batch.lost or lost
        for index in indexes:
            self._resolve(batch, index, reason)

    def _fail_unconfirmed(self, reason: str, lost: bool = True) -> None:
        entries = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._tags.clear()
        for batch, index in entries:
            batch.lost = batch.lost or lost
            self._resolve(batch, index, reason)

    # -- ops (I/O thread) ------------------------------------------------------------------

    def start_op(
        self, op: Op[T], future: Future[T], keep: Callable[[Channel, BaseException], None] | None = None
    ) -> None:
        """Open a channel and run ``op`` on it; ``future`` gets its result or error."""
        if not future.set_running_or_notify_cancel():
            return
        if not self.ready or self.conn is None:
            future.set_exception(ConnectionLost("the AMQP connection is closed"))
            return
        _Run(self.conn, op, future, keep)


class _Run:
    """Drives one op: each yielded step gets a callback that resumes the generator."""

    def __init__(
        self,
        conn: SelectConnection,
        op: Op[Any],
        future: Future[Any],
        keep: Callable[[Channel, BaseException], None] | None,
    ) -> None:
        self.op, self.future, self.keep = op, future, keep
        self.gen: Generator[Step, Any, Any] | None = None
        try:
            channel = conn.channel(on_open_callback=self._opened)
        except Exception as exc:
            future.set_exception(exc)
            return
        channel.add_on_close_callback(self._closed)

    def _opened(self, channel: Channel) -> None:
        self.channel = channel
        self.gen = self.op(channel)
        self._step(None)

    def _step(self, reply: Any) -> None:
        assert self.gen is not None
        try:
            step = self.gen.send(reply)
        except StopIteration as stop:
            self.future.set_result(stop.value)
            if self.keep is None and self.channel.is_open:
                self.channel.close()
            return
        except Exception as exc:
            self._fail(exc)
            return
        try:
            step(self._step)
        except Exception as exc:  # pika refused the request (a closing channel, a bad argument)
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
        if self.channel.is_open:
            self.channel.close()

    def _closed(self, channel: Channel, reason: BaseException) -> None:
        if self.future.done():
            if self.keep is not None and self.future.exception() is None:
                self.keep(channel, reason)
            return
        error: BaseException = refusal(reason, "the broker closed the channel") or reason
        if self.gen is None:
            self.future.set_exception(error)
            return
        try:
            self.gen.throw(reason)
        except StopIteration as stop:
            self.future.set_result(stop.value)
        except BaseException as exc:
            self.future.set_exception(error if exc is reason else exc)
        else:
            self.future.set_exception(error)
