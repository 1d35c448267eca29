"""``bridgeq demo``: the async-messaging pattern, live: a producer, a consumer, and L, R, C."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from bridgeq.api import Broker
from bridgeq.message import Delivery, Message
from bridgeq.metrics import QueueModel, RateSampler


@dataclass
class DemoRun:
    """A producer thread and a consumer thread on one topic, observed from outside."""

    broker: Broker
    messages: int
    publish_rate: float = 10_000.0
    consume_rate: float = 8_000.0
    publish_batch: int = 100
    topic: str = ""
    group: str = "demo"

    def __post_init__(self) -> None:
        self.topic = self.topic or f"demo-{uuid.uuid4().hex[:8]}"
        self.broker.declare(self.topic, self.group)
        self.consumed = 0
        self.done = threading.Event()
        self._sampler = RateSampler()
        self._threads = [
            threading.Thread(target=self._produce, name="demo-producer", daemon=True),
            threading.Thread(target=self._consume, name="demo-consumer", daemon=True),
        ]
        self.started = time.monotonic()
        self.error: BaseException | None = None

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _produce(self) -> None:
        try:
            for first in range(0, self.messages, self.publish_batch):
                count = min(self.publish_batch, self.messages - first)
                self.broker.publish_batch(self.topic, [Message(f"order {first + i}") for i in range(count)])
                _pace(self.started, first + count, self.publish_rate)
        except BaseException as exc:
            self.error = exc
            self.done.set()

    def _consume(self) -> None:
        def handle(delivery: Delivery) -> None:
            self.consumed += 1
            if self.consumed % 50 == 0:
                _pace(self.started, self.consumed, self.consume_rate)

        try:
            with self.broker.subscribe(self.topic, self.group) as sub:
                sub.run(handle, stop_after=self.messages)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def sample(self) -> QueueModel:
        """L from the broker, R and C from what this process published and acked since the last sample."""
        published, acked = self.broker.meter.totals(self.topic, self.group)
        publish_rate, consume_rate = self._sampler.sample(published, acked)
        return QueueModel(self.broker.depth(self.topic, self.group), publish_rate, consume_rate)

    def finish(self) -> None:
        self.done.wait()
        for thread in self._threads:
            thread.join(5)
        self.broker.delete(self.topic)
        if self.error is not None:
            raise self.error


def _pace(started: float, done: int, rate: float) -> None:
    """Sleep until ``done`` items at ``rate`` per second are due (no-op for rate 0 = unlimited)."""
    if rate > 0:
        ahead = started + done / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
