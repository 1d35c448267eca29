"""Shared by the migration tests: broker URLs from the suite's targets, and filling a source."""

from __future__ import annotations

import contextlib
import uuid

import bridgeq
from bridgeq.migration import DEFAULT_GROUP
from bridgeq.testing.targets import url_or_skip

REAL = ("redis", "rabbitmq", "kafka")


url_of = url_or_skip


def fresh_topic() -> str:
    return f"mig-{uuid.uuid4().hex[:10]}"


def fill(url: str, topic: str, count: int) -> dict[str, tuple[bytes, str | None, dict[str, str]]]:
    """Publish ``count`` varied messages after declaring the migration group; returns them by id."""
    sent = {}
    with bridgeq.connect(url) as broker:
        broker.declare(topic, DEFAULT_GROUP)
        for start in range(0, count, 1000):
            batch = [
                bridgeq.Message(
                    bytes([i % 256]) * (i % 50) + f"#{i}".encode(),
                    headers={"n": str(i), "kind": "ü-test"} if i % 3 else {},
                    key=f"k{i % 7}" if i % 2 else None,
                )
                for i in range(start, min(start + 1000, count))
            ]
            broker.publish_batch(topic, batch)
            sent.update({m.id: (m.body, m.key, dict(m.headers)) for m in batch})
    return sent


def cleanup(url: str, *topics: str) -> None:
    with bridgeq.connect(url) as broker:
        for topic in topics:
            with contextlib.suppress(bridgeq.BridgeqError):
                broker.delete(topic)
