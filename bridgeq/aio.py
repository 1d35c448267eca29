"""bridgeq for asyncio: the same brokers, names and semantics, awaitable.

    async with bridgeq.aio.connect("redis://localhost:6379/0") as broker:
        await broker.publish("orders", b"...")
        async with broker.subscribe("orders", group="billing") as sub:
            async for delivery in sub:
                await delivery.ack()

Every call that may wait on the network runs on a worker thread, never on the
event loop: publishing on the broker's pool, fetching on one thread per
subscription. Backends that never block (``memory://``) are called on the loop,
and backends with ``publishes_async`` (Redis) publish on the loop through their
own asyncio connection.
A task cancelled while receiving loses nothing: what was fetched but not handed
to it goes back to the head of the subscription's line. Deliveries are the same
:class:`bridgeq.Delivery` objects as in threads: ``await delivery.ack()``.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar

from bridgeq import api
from bridgeq.capabilities import Capabilities
from bridgeq.handoff import CallThread
from bridgeq.message import PENDING, Body, Delivery, Message, Settled
from bridgeq.spi import Totals
from bridgeq.subscription import Subscription
from bridgeq.url import BrokerURL

__all__ = ["AsyncBroker", "AsyncSubscription", "connect"]

log = logging.getLogger("bridgeq")
T = TypeVar("T")
AsyncHandler = Callable[[Delivery], Awaitable[Any] | Any]
INLINE_BATCH = 256  # a never-blocking backend publishes this many on the loop; a larger batch costs
# milliseconds of CPU, so it goes to a worker thread like any other backend's


def connect(url: str | BrokerURL | None = None) -> _Opening[AsyncBroker]:
    """An :class:`AsyncBroker`: ``await connect(url)`` or ``async with connect(url) as broker``."""

    async def open_broker() -> AsyncBroker:
        pool = await _started_executor(8, "bridgeq-aio")
        broker = await asyncio.get_running_loop().run_in_executor(pool, api.connect, url)
        return AsyncBroker(broker, pool)

    return _Opening(open_broker)


async def _started_executor(workers: int, name: str) -> concurrent.futures.ThreadPoolExecutor:
    """A thread pool whose threads are all running, started from a thread that is not the loop's.

    Starting a thread waits until it runs; on a busy machine that wait alone can hold
    the loop for tens of milliseconds, so no thread is ever started on the loop.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[concurrent.futures.ThreadPoolExecutor] = loop.create_future()

    def build() -> None:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        everyone = threading.Barrier(workers + 1)
        for _ in range(workers):  # each waiting task makes the pool start one more thread
            pool.submit(everyone.wait)
        everyone.wait()
        loop.call_soon_threadsafe(ready.set_result, pool)

    _thread.start_new_thread(build, ())  # returns at once, unlike threading.Thread.start
    return await ready


class _Opening(Awaitable[T]):
    """Awaitable, or an async context manager that closes what it opened."""

    def __init__(self, opener: Callable[[], Awaitable[T]]) -> None:
        self._opener = opener
        self._opened: Any = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._opener().__await__()

    async def __aenter__(self) -> T:
        self._opened = await self._opener()
        return self._opened

    async def __aexit__(self, *exc_info: object) -> None:
        await self._opened.close()


class AsyncBroker:
    """The asyncio face of :class:`bridgeq.Broker`; ``sync`` is the broker underneath."""

    def __init__(self, broker: api.Broker, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.sync = broker
        self._pool = pool
        self._inline = broker.backend.nonblocking

    @property
    def capabilities(self) -> Capabilities:
        return self.sync.capabilities

    @property
    def url(self) -> BrokerURL:
        return self.sync.url

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        if self._inline:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def declare(self, topic: str, group: str | None = None) -> None:
        await self._call(self.sync.declare, topic, group)

    async def publish(
        self,
        topic: str,
        body: Body = b"",
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        id: str | None = None,  # noqa: A002 - the public name of the field
    ) -> str:
        message = Message(body, headers, key, id)  # checked here, before any thread is involved
        await self._publish(topic, [message])
        return message.id

    async def publish_batch(self, topic: str, messages: Iterable[Message | Body]) -> list[str]:
        return await self._publish(topic, messages)

    async def _publish(self, topic: str, messages: Iterable[Message | Body]) -> list[str]:
        sync, backend = self.sync, self.sync.backend
        if backend.publishes_async:  # checked and sent on the loop: no thread hop
            batch = sync.checked(topic, messages)
            if batch:
                await backend.publish_async(topic, batch)
                sync.meter.count_published(topic, len(batch))
            return [m.id for m in batch]
        given = list(messages)
        if self._inline and len(given) <= INLINE_BATCH:
            return sync.publish_batch(topic, given)
        return await asyncio.get_running_loop().run_in_executor(self._pool, sync.publish_batch, topic, given)

    def subscribe(self, topic: str, group: str, **options: Any) -> _Opening[AsyncSubscription]:
        """Join ``group``: ``await broker.subscribe(...)`` or ``async with broker.subscribe(...) as sub``.

        Takes the options of :meth:`bridgeq.Broker.subscribe`.
        """

        async def open_subscription() -> AsyncSubscription:
            reader = CallThread()
            try:
                sync = await reader.call(lambda: self.sync.subscribe(topic, group, **options))
            except BaseException:
                reader.stop()
                raise
            return AsyncSubscription(sync, reader, self._inline, self._pool)

        return _Opening(open_subscription)

    async def depth(self, topic: str, group: str) -> int | None:
        return await self._call(self.sync.depth, topic, group)

    async def totals(self, topic: str, group: str) -> Totals | None:
        return await self._call(self.sync.totals, topic, group)

    async def delete(self, topic: str) -> None:
        await self._call(self.sync.delete, topic)

    async def close(self) -> None:
        if not self.sync.closed:
            await self.sync.backend.close_async()
        await asyncio.get_running_loop().run_in_executor(self._pool, self.sync.close)
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncBroker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<bridgeq.aio.AsyncBroker {self.sync.url}{' closed' if self.closed else ''}>"


class AsyncSubscription:
    """The asyncio face of :class:`bridgeq.Subscription`; fetches run on its own reader thread."""

    def __init__(
        self,
        sync: Subscription,
        reader: CallThread,
        inline: bool,
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        self.sync = sync
        self._reader = reader
        self._pool = pool  # the broker's: close() runs there while the reader may be mid-fetch
        self._inline = inline
        if not inline:  # sending acks waits on the network: never on the loop. They go with
            sync.flush_soon = _later  # the next fetch (one thread hop for both), or the linger thread.

    topic = property(lambda self: self.sync.topic)
    group = property(lambda self: self.sync.group)
    prefetch = property(lambda self: self.sync.prefetch)
    dead_letter_topic = property(lambda self: self.sync.dead_letter_topic)
    closed = property(lambda self: self.sync.closed)

    async def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once closed."""
        batch = await self._fetch(1, timeout)
        return batch[0] if batch else None

    async def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits at most ``timeout`` for the first."""
        return await self._fetch(max_messages, timeout)

    async def _fetch(self, max_messages: int, timeout: float | None) -> list[Delivery]:
        got = self.sync.take_buffered(max_messages)
        if got or self.sync.closed:
            return got
        if self._inline:  # a backend that never blocks: try without leaving the loop
            got = self.sync.receive_batch(max_messages, timeout=0)
            if got or timeout == 0:
                return got
        # cancelled while the fetch runs: what it brings goes back to the head of the line
        return await self._reader.call(self.sync.receive_batch, max_messages, timeout, orphan=self.sync.unreceive)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            batch = await self._fetch(self.sync.prefetch, None)
            if not batch:
                return
            for index, delivery in enumerate(batch):
                try:
                    yield delivery
                except BaseException:  # the iteration was abandoned: the rest goes back in line
                    self.sync.unreceive(batch[index + 1 :])
                    raise

    def ack(self, deliveries: Iterable[Delivery]) -> Settled:
        """Ack many deliveries at once; awaitable, never blocks the loop."""
        return self.sync.ack(deliveries)

    def nack(self, deliveries: Iterable[Delivery], requeue: bool = True, reason: str = "nacked") -> Settled:
        """Nack many deliveries at once; awaitable, never blocks the loop."""
        return self.sync.nack(deliveries, requeue, reason)

    async def run(
        self,
        handler: AsyncHandler,
        concurrency: int = 1,
        stop_after: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Call ``handler`` for up to ``concurrency`` deliveries at once: ack on return, nack on raise.

        Returns the number handled once ``stop_after`` were handled, nothing came
        for ``idle_timeout`` seconds, or the subscription closed. Cancelling the
        task stops it cleanly: deliveries not yet handled go back in line.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        queue: asyncio.Queue[Delivery | None] = asyncio.Queue(maxsize=concurrency)
        handled = 0

        async def work() -> None:
            nonlocal handled
            while (delivery := await queue.get()) is not None:
                await _handle(handler, delivery)
                handled += 1

        workers = [asyncio.create_task(work()) for _ in range(concurrency)]
        try:
            fed = 0
            while stop_after is None or fed < stop_after:
                want = self.sync.prefetch if stop_after is None else min(self.sync.prefetch, stop_after - fed)
                batch = await self._fetch(want, idle_timeout)
                if not batch:
                    break
                for index, delivery in enumerate(batch):
                    try:
                        await queue.put(delivery)
                    except BaseException:
                        self.sync.unreceive(batch[index:])
                        raise
                fed += len(batch)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        except BaseException:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            left = []
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    left.append(item)
            self.sync.unreceive(left)
            raise
        return handled

    async def flush(self) -> None:
        await self._reader.call(self.sync.flush)

    async def close(self) -> None:
        """Leave the group: deliveries not acked become deliverable again. Idempotent."""
        self.sync.flush_soon = None
        await asyncio.get_running_loop().run_in_executor(self._pool, self.sync.close)
        self._reader.stop()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _later() -> None:
    """Acks waiting past ``ack_batch`` in asyncio: left for the next fetch or the linger thread."""


async def _handle(handler: AsyncHandler, delivery: Delivery) -> None:
    """Run one handler call: ack on return, nack (requeue) on raise, requeue on cancellation."""
    try:
        result = handler(delivery)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        if delivery.state is PENDING:
            delivery.nack(requeue=True, reason="handler cancelled")
        raise
    except Exception as exc:
        log.warning("handler failed on %s: %r", delivery.id, exc, exc_info=True)
        if delivery.state is PENDING:
            delivery.nack(requeue=True, reason=f"{type(exc).__name__}: {exc}")
    else:
        if delivery.state is PENDING:
            delivery.ack()
