"""A consumer process SIGKILLed while holding 100 unacked messages: another gets all 100, attempt 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import bridgeq

DOOMED = textwrap.dedent(
    """
    import sys, time, bridgeq
    broker = bridgeq.connect(sys.argv[1])
    sub = broker.subscribe(sys.argv[2], "g", prefetch=100)
    held = []
    deadline = time.monotonic() + 60
    while len(held) < 100 and time.monotonic() < deadline:
        held.extend(sub.receive_batch(100 - len(held), timeout=1.0))
    print(len(held), flush=True)
    time.sleep(600)
    """
)


def test_sigkilled_consumer_loses_nothing_and_counts_attempt_two(redis_url, topic, raw, claim_idle_s) -> None:
    claim_idle = claim_idle_s
    with bridgeq.connect(redis_url) as broker:
        broker.declare(topic, "g")
        ids = broker.publish_batch(topic, [f"m{i}" for i in range(100)])
        child = subprocess.Popen([sys.executable, "-c", DOOMED, redis_url, topic], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "100"
            # Held for a few renewal periods: a live consumer keeps its entries past claim_idle_ms.
            time.sleep(claim_idle * 1.5)
            pending = raw.xpending(f"bridgeq:{topic}", "g")
            assert pending["pending"] == 100
            oldest = raw.xpending_range(f"bridgeq:{topic}", "g", "-", "+", 1)[0]
            assert oldest["time_since_delivered"] < claim_idle * 1000
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        killed = time.monotonic()
        got: list[bridgeq.Delivery] = []
        with broker.subscribe(topic, "g", prefetch=100) as sub:
            deadline = killed + broker.capabilities.crash_redelivery_seconds + 5
            while len(got) < 100 and time.monotonic() < deadline:
                for delivery in sub.receive_batch(100, timeout=0.5):
                    if not got:
                        first = time.monotonic() - killed
                    got.append(delivery)
                    delivery.ack()
        assert sorted(d.id for d in got) == sorted(ids), "every message, each once"
        assert {d.attempt for d in got} == {2}
        # Not before the dead consumer's last renewal aged claim_idle_ms (renewals run every claim_idle/3).
        assert first >= claim_idle * 2 / 3 - 0.1
        assert first <= broker.capabilities.crash_redelivery_seconds
        assert broker.depth(topic, "g") == 0
        # The dead consumer was removed from the group once its entries were taken over.
        names = [c["name"] for c in raw.xinfo_consumers(f"bridgeq:{topic}", "g")]
        assert len(names) <= 1
