"""Read a migrated topic back and compare it with the migration's manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bridgeq import api
from bridgeq.manifest import Manifest, fingerprint_of

VERIFY_GROUP = "bridgeq-verify"
"""The group that reads the destination back; declared on it before the first message moves."""


@dataclass
class VerifyReport:
    """The destination compared with the manifest."""

    expected: int
    received: int
    missing: int
    extra: int
    duplicated: int
    altered: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.altered == 0


def verify_destination(dst: api.Broker, topic: str, manifest: Manifest, idle_timeout: float) -> VerifyReport:
    """Read ``topic`` as the verification group and compare with the manifest."""
    expected = manifest.entries
    counts: Counter[str] = Counter()
    altered = 0
    with dst.subscribe(topic, VERIFY_GROUP, prefetch=1000, max_deliveries=None) as sub:
        deadline_idle = idle_timeout
        while True:
            chunk = sub.receive_batch(1000, timeout=deadline_idle)
            if not chunk:
                if set(counts) >= set(expected):
                    break
                if deadline_idle >= idle_timeout * 4:
                    break
                deadline_idle *= 2  # still missing some: give the broker a little longer
                continue
            for delivery in chunk:
                counts[delivery.id] += 1
                known = expected.get(delivery.id)
                if known is not None and counts[delivery.id] == 1 and fingerprint_of(delivery) != known:
                    altered += 1
            sub.ack(chunk)
    received = sum(counts.values())
    return VerifyReport(
        expected=len(expected),
        received=received,
        missing=sum(1 for message_id in expected if message_id not in counts),
        extra=sum(1 for message_id in counts if message_id not in expected),
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
        altered=altered,
    )
