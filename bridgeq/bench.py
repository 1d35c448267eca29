"""``bridgeq bench``: publish rate R, consume rate C and publish->receive latency, measured."""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from bridgeq.aio import AsyncBroker
from bridgeq.api import Broker
from bridgeq.message import Message

STAMP_HEADER = "bridgeq-bench-sent-ns"
GROUP = "bench"


@dataclass(frozen=True)
class BenchResult:
    """What one bench run measured."""

    url: str
    messages: int
    size: int
    batch: int
    publish_rate: float
    consume_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int
    read_ahead: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class BenchPlan:
    """One bench run: ``messages`` of ``size`` bytes published and consumed in batches of ``batch``,
    then ``latency_samples`` publish->receive round trips; ``read_ahead`` for the subscription."""

    messages: int = 10_000
    size: int = 100
    batch: int = 100
    latency_samples: int = 200
    read_ahead: bool = False

    @property
    def body(self) -> bytes:
        return b"x" * self.size

    def batches(self) -> list[list[Message]]:
        body = self.body
        return [
            [Message(body) for _ in range(min(self.batch, self.messages - i))]
            for i in range(0, self.messages, self.batch)
        ]

    def reading(self) -> dict[str, Any]:
        """The subscription's options: with read_ahead, prefetch leaves room for the batch read ahead."""
        prefetch = max(self.batch, 100)
        return {"prefetch": 2 * prefetch, "read_ahead": True} if self.read_ahead else {"prefetch": prefetch}

    def result(self, url: str, publish_rate: float, consume_rate: float, latencies: list[float]) -> BenchResult:
        quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        return BenchResult(
            url=url,
            messages=self.messages,
            size=self.size,
            batch=self.batch,
            publish_rate=publish_rate,
            consume_rate=consume_rate,
            latency_p50_ms=quantiles[49],
            latency_p99_ms=quantiles[98],
            latency_samples=len(latencies),
            read_ahead=self.read_ahead,
        )


def run_bench(broker: Broker, plan: BenchPlan) -> BenchResult:
    """Publish the plan's messages in batches, consume them with batched acks, then time round trips."""
    topic, messages = f"bench-{uuid.uuid4().hex[:8]}", plan.messages
    broker.declare(topic, GROUP)
    try:
        batches = plan.batches()
        with broker.subscribe(topic, GROUP, **plan.reading()) as sub:
            sub.receive(timeout=0.5)  # join before timing
            started = time.perf_counter()
            for chunk in batches:
                broker.publish_batch(topic, chunk)
            publish_rate = messages / (time.perf_counter() - started)
            started = time.perf_counter()
            received = 0
            while received < messages:
                got = sub.receive_batch(plan.batch, timeout=30)
                if not got:
                    raise TimeoutError(f"bench: only {received} of {messages} messages came back")
                for delivery in got:
                    delivery.ack()
                received += len(got)
            sub.flush()
            consume_rate = messages / (time.perf_counter() - started)
            latencies = _round_trips(broker, sub, topic, plan.body, plan.latency_samples)
    finally:
        broker.delete(topic)
    return plan.result(str(broker.url), publish_rate, consume_rate, latencies)


async def run_bench_async(broker: AsyncBroker, plan: BenchPlan) -> BenchResult:
    """:func:`run_bench` through :mod:`bridgeq.aio`, the same steps awaited."""
    topic, messages = f"bench-{uuid.uuid4().hex[:8]}", plan.messages
    await broker.declare(topic, GROUP)
    try:
        batches = plan.batches()
        async with broker.subscribe(topic, GROUP, **plan.reading()) as sub:
            await sub.receive(timeout=0.5)
            started = time.perf_counter()
            for chunk in batches:
                await broker.publish_batch(topic, chunk)
            publish_rate = messages / (time.perf_counter() - started)
            started = time.perf_counter()
            received = 0
            while received < messages:
                got = await sub.receive_batch(plan.batch, timeout=30)
                if not got:
                    raise TimeoutError(f"bench: only {received} of {messages} messages came back")
                for delivery in got:
                    await delivery.ack()
                received += len(got)
            await sub.flush()
            consume_rate = messages / (time.perf_counter() - started)
            latencies = []
            for _ in range(plan.latency_samples):
                sent = time.perf_counter_ns()
                await broker.publish(topic, plan.body, headers={STAMP_HEADER: str(sent)})
                probe = await sub.receive(timeout=30)
                if probe is None:
                    raise TimeoutError("bench: a latency probe did not come back")
                latencies.append((time.perf_counter_ns() - int(probe.headers[STAMP_HEADER])) / 1e6)
                await probe.ack()
    finally:
        await broker.delete(topic)
    return plan.result(str(broker.url), publish_rate, consume_rate, latencies)


def _round_trips(broker: Broker, sub: object, topic: str, body: bytes, samples: int) -> list[float]:
    from bridgeq.subscription import Subscription

    assert isinstance(sub, Subscription)
    latencies = []
    for _ in range(samples):
        sent = time.perf_counter_ns()
        broker.publish(topic, body, headers={STAMP_HEADER: str(sent)})
        delivery = sub.receive(timeout=30)
        if delivery is None:
            raise TimeoutError("bench: a latency probe did not come back")
        latencies.append((time.perf_counter_ns() - int(delivery.headers[STAMP_HEADER])) / 1e6)
        delivery.ack()
    return latencies


def median_result(results: list[BenchResult]) -> BenchResult:
    """The median of each figure over several runs of the same bench."""
    first = results[0]
    return BenchResult(
        url=first.url,
        messages=first.messages,
        size=first.size,
        batch=first.batch,
        publish_rate=statistics.median(r.publish_rate for r in results),
        consume_rate=statistics.median(r.consume_rate for r in results),
        latency_p50_ms=statistics.median(r.latency_p50_ms for r in results),
        latency_p99_ms=statistics.median(r.latency_p99_ms for r in results),
        latency_samples=sum(r.latency_samples for r in results),
        read_ahead=first.read_ahead,
    )
