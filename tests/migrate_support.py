"""Shared by the migration tests: broker URLs from the suite's targets, and filling a source."""

from __future__ import annotations

import contextlib
import uuid

import pytest

import bridgeq
from bridgeq.migration import DEFAULT_GROUP
from bridgeq.testing.targets import required, resolve_target

REAL = ("redis", "rabbitmq", "kafka")


def url_of(backend: str) -> str:
    """The test broker for ``backend``: skipped when missing, failed when required."""
    target = resolve_target(backend)
    if target.url is None:
        if required(backend):
            pytest.fail(f"{backend}: required by BRIDGEQ_TEST_REQUIRE but unavailable: {target.reason}")
        pytest.skip(f"{backend}: {target.reason}")
    return target.url


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
