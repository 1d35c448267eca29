"""Helpers the conformance cases share: collecting deliveries with a deadline."""

from __future__ import annotations

import os
import time

from bridgeq.message import Delivery
from bridgeq.subscription import Subscription


def patience() -> float:
    """Seconds a case waits for messages that must arrive (it returns as soon as they do)."""
    return float(os.environ.get("BRIDGEQ_TEST_PATIENCE", "30"))


def collect(
    sub: Subscription, count: int, *, ack: bool = True, wait: float | None = None, batch: int = 100
) -> list[Delivery]:
    """Receive until ``count`` deliveries arrived or ``wait`` (default: patience()) ran out; ack each if asked."""
    got: list[Delivery] = []
    deadline = time.monotonic() + (patience() if wait is None else wait)
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for delivery in sub.receive_batch(min(batch, count - len(got)), timeout=min(left, 1.0)):
            got.append(delivery)
            if ack:
                delivery.ack()
    return got


def quiet(sub: Subscription, wait: float = 1.0) -> list[Delivery]:
    """Whatever arrives within ``wait`` seconds (expected: nothing)."""
    extra: list[Delivery] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        extra.extend(sub.receive_batch(100, timeout=left))
    return extra


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]
