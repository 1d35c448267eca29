"""``bridgeq bench``: publish rate R, consume rate C and publish->receive latency, measured."""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import asdict, dataclass

from bridgeq.api import Broker
from bridgeq.message import Message

STAMP_HEADER = "bridgeq-bench-sent-ns"


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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_bench(
    broker: Broker, messages: int = 10_000, size: int = 100, batch: int = 100, latency_samples: int = 200
) -> BenchResult:
    """Publish ``messages`` in batches, consume them with batched acks, then time round trips."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    group = "bench"
    broker.declare(topic, group)
    try:
        body = b"x" * size
        batches = [[Message(body) for _ in range(min(batch, messages - i))] for i in range(0, messages, batch)]
        with broker.subscribe(topic, group, prefetch=max(batch, 100)) as sub:
            sub.receive(timeout=0.5)  # join before timing
            started = time.perf_counter()
            for chunk in batches:
                broker.publish_batch(topic, chunk)
            publish_rate = messages / (time.perf_counter() - started)
            started = time.perf_counter()
            received = 0
            while received < messages:
                got = sub.receive_batch(batch, timeout=30)
                if not got:
                    raise TimeoutError(f"bench: only {received} of {messages} messages came back")
                for delivery in got:
                    delivery.ack()
                received += len(got)
            sub.flush()
            consume_rate = messages / (time.perf_counter() - started)
            latencies = _round_trips(broker, sub, topic, body, latency_samples)
    finally:
        broker.delete(topic)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return BenchResult(
        url=str(broker.url),
        messages=messages,
        size=size,
        batch=batch,
        publish_rate=publish_rate,
        consume_rate=consume_rate,
        latency_p50_ms=quantiles[49],
        latency_p99_ms=quantiles[98],
        latency_samples=len(latencies),
    )


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
