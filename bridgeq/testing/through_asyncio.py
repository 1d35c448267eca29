"""The sync API's shape over :mod:`bridgeq.aio`, so every conformance case also runs through asyncio.

Each call is a coroutine run on one event loop in a background thread. Two
watches keep the loop honest:

* :class:`LoopGuard` (exact): every call into a backend that may block is
  recorded if it runs on the loop's thread; the suite fails such a case.
* asyncio's debug mode (measured): callbacks holding the loop longer than
  ``SLOW_CALLBACK`` are recorded with their durations and summed up at the end
  of the run. Only a hold past ``HANG`` fails a case: on a busy two-core machine
  a callback that does nothing can wait tens of milliseconds for the GIL, so
  shorter holds are figures to read, not verdicts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from bridgeq import aio
from bridgeq.message import Delivery

T = TypeVar("T")
SLOW_CALLBACK = 0.05
HANG = 1.0
_TOOK = re.compile(r"took (\d+(?:\.\d+)?) seconds")


class SlowCallbacks(logging.Handler):
    """asyncio's reports of callbacks that held the loop, with how long each held it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        took = _TOOK.search(message)
        if message.startswith("Executing") and took:
            self.seen.append((float(took.group(1)), message))

    def hangs(self) -> list[str]:
        return [message for seconds, message in self.seen if seconds >= HANG]


class LoopGuard:
    """Records each call into a blocking backend made on the event loop's own thread
    (its ``*_async`` coroutine methods excepted)."""

    def __init__(self) -> None:
        self.loop_thread: int | None = None
        self.violations: list[str] = []

    def wrap(self, target: Any, label: str) -> Any:
        return _Guarded(target, self, label)

    def check(self, what: str) -> None:
        if threading.get_ident() == self.loop_thread:
            self.violations.append(what)


class _Guarded:
    """Forwards to a backend or consumer; its methods report calls made on the loop."""

    def __init__(self, target: Any, guard: LoopGuard, label: str) -> None:
        self._target = target
        self._guard = guard
        self._label = label

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or name.endswith("_async") or not callable(value):
            return value  # coroutine methods are made to run on the loop
        guard, what = self._guard, f"{self._label}.{name}()"

        def guarded(*args: Any, **kwargs: Any) -> Any:
            guard.check(what)
            result = value(*args, **kwargs)
            return guard.wrap(result, "consumer") if name == "consumer" else result

        return guarded


class LoopThread:
    """One event loop in a daemon thread, in debug mode, watching for slow callbacks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = SLOW_CALLBACK
        self.slow = SlowCallbacks()
        self.guard = LoopGuard()
        logging.getLogger("asyncio").addHandler(self.slow)
        self._thread = threading.Thread(target=self.loop.run_forever, name="bridgeq-test-loop", daemon=True)
        self._thread.start()
        self.guard.loop_thread = self._thread.ident

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        logging.getLogger("asyncio").removeHandler(self.slow)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Broker:
    """Looks like :class:`bridgeq.Broker`; every call goes through :class:`bridgeq.aio.AsyncBroker`."""

    def __init__(self, url: str, loop: LoopThread) -> None:
        self._loop = loop
        self.aio: aio.AsyncBroker = loop.run(_open(url))
        sync = self.aio.sync
        if not sync.backend.nonblocking:
            sync.backend = loop.guard.wrap(sync.backend, type(sync.backend).__name__)

    def __getattr__(self, name: str) -> Any:
        if name in ("capabilities", "url", "closed"):
            return getattr(self.aio, name)
        raise AttributeError(name)

    def declare(self, topic: str, group: str | None = None) -> None:
        self._loop.run(self.aio.declare(topic, group))

    def publish(self, topic: str, body: Any = b"", **kwargs: Any) -> str:
        return self._loop.run(self.aio.publish(topic, body, **kwargs))

    def publish_batch(self, topic: str, messages: Any) -> list[str]:
        return self._loop.run(self.aio.publish_batch(topic, list(messages)))

    def subscribe(self, topic: str, group: str, **options: Any) -> Subscription:
        return Subscription(self._loop.run(_subscribe(self.aio, topic, group, options)), self._loop)

    def depth(self, topic: str, group: str) -> int | None:
        return self._loop.run(self.aio.depth(topic, group))

    def delete(self, topic: str) -> None:
        self._loop.run(self.aio.delete(topic))

    def close(self) -> None:
        self._loop.run(self.aio.close())

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _open(url: str) -> aio.AsyncBroker:
    return await aio.connect(url)


async def _subscribe(broker: aio.AsyncBroker, topic: str, group: str, options: dict[str, Any]) -> aio.AsyncSubscription:
    return await broker.subscribe(topic, group, **options)


class DeliveryView:
    """Looks like :class:`bridgeq.Delivery`; ack and nack are awaited on the loop."""

    def __init__(self, delivery: Delivery, loop: LoopThread) -> None:
        self.aio = delivery
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.aio, name)

    def ack(self) -> None:
        self._loop.run(_settle(self.aio.ack))

    def nack(self, requeue: bool = True, reason: str = "") -> None:
        self._loop.run(_settle(self.aio.nack, requeue, reason))


async def _settle(settle: Callable[..., Any], *args: Any) -> None:
    await settle(*args)


class Subscription:
    """Looks like :class:`bridgeq.Subscription`; reads through :class:`bridgeq.aio.AsyncSubscription`."""

    def __init__(self, subscription: aio.AsyncSubscription, loop: LoopThread) -> None:
        self.aio = subscription
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        if name in ("topic", "group", "prefetch", "dead_letter_topic", "closed"):
            return getattr(self.aio, name)
        raise AttributeError(name)

    def _view(self, delivery: Delivery | None) -> DeliveryView | None:
        return None if delivery is None else DeliveryView(delivery, self._loop)

    def receive(self, timeout: float | None = None) -> DeliveryView | None:
        return self._view(self._loop.run(self.aio.receive(timeout)))

    def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[DeliveryView]:
        return [DeliveryView(d, self._loop) for d in self._loop.run(self.aio.receive_batch(max_messages, timeout))]

    def __iter__(self) -> Iterator[DeliveryView]:
        iterator = self.aio.__aiter__()
        while True:
            try:
                delivery = self._loop.run(_next(iterator))
            except StopAsyncIteration:
                return
            yield DeliveryView(delivery, self._loop)

    def run(
        self, handler: Callable[[Any], Any], stop_after: int | None = None, idle_timeout: float | None = None
    ) -> int:
        loop = self._loop

        async def call(delivery: Delivery) -> None:
            handler(delivery)

        return loop.run(self.aio.run(call, concurrency=2, stop_after=stop_after, idle_timeout=idle_timeout))

    def ack(self, deliveries: list[DeliveryView]) -> None:
        self._loop.run(_settle(self.aio.ack, [d.aio for d in deliveries]))

    def flush(self) -> None:
        self._loop.run(self.aio.flush())

    def close(self) -> None:
        self._loop.run(self.aio.close())

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _next(iterator: Any) -> Delivery:
    return await iterator.__anext__()


__all__ = ["Broker", "Delivery", "LoopThread"]
