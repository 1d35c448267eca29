"""The queue model: L (waiting), R (publish rate), C (consume rate) and the drain time.

Throughput in steady state is min(R, C); the backlog grows at dL/dt = R - C and
drains in L / (C - R) when C > R.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class QueueModel:
    """One reading of a group's queue; None where the broker cannot tell."""

    depth: int | None
    publish_rate: float | None
    consume_rate: float | None

    @property
    def throughput(self) -> float | None:
        """Messages per second through the group in steady state: min(R, C)."""
        if self.publish_rate is None or self.consume_rate is None:
            return None
        return min(self.publish_rate, self.consume_rate)

    @property
    def growth(self) -> float | None:
        """dL/dt = R - C, messages per second (negative while draining)."""
        if self.publish_rate is None or self.consume_rate is None:
            return None
        return self.publish_rate - self.consume_rate

    @property
    def drain_seconds(self) -> float | None:
        """L / (C - R): seconds until the backlog is gone; inf while it grows; None if unknown."""
        growth = self.growth
        if self.depth is None or growth is None:
            return None
        if self.depth == 0:
            return 0.0
        return self.depth / -growth if growth < 0 else float("inf")


class Meter:
    """Counts what one process published and acked, per topic and per (topic, group). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published: Counter[str] = Counter()
        self.acked: Counter[tuple[str, str]] = Counter()

    def count_published(self, topic: str, n: int) -> None:
        with self._lock:
            self.published[topic] += n

    def count_acked(self, topic: str, group: str, n: int) -> None:
        with self._lock:
            self.acked[topic, group] += n

    def totals(self, topic: str, group: str) -> tuple[int, int]:
        with self._lock:
            return self.published[topic], self.acked[topic, group]


class RateSampler:
    """Turns successive (published, settled) totals into R and C over the time between them."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None

    def sample(self, published: int, settled: int) -> tuple[float | None, float | None]:
        now = time.monotonic()
        last, self._last = self._last, (now, published, settled)
        if last is None or now <= last[0]:
            return None, None
        elapsed = now - last[0]
        return (published - last[1]) / elapsed, (settled - last[2]) / elapsed


def format_seconds(seconds: float | None) -> str:
    """A drain estimate for people: '12.3 s', 'growing', 'unknown'."""
    if seconds is None:
        return "unknown"
    if seconds == float("inf"):
        return "growing"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"
