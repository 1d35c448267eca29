"""A consumer process SIGKILLed while holding 100 unacked messages: another member gets all 100."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
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
    while True:  # alive and polling (so it stays a member), never acking
        sub.receive(timeout=0.5)
    """
)


def test_sigkilled_member_holding_100_unacked_messages_loses_nothing(kafka_url, topic) -> None:
    with bridgeq.connect(kafka_url) as broker:
        broker.declare(topic, "g")
        ids = broker.publish_batch(topic, [bridgeq.Message(f"m{i}", key=f"k{i}") for i in range(100)])
        child = subprocess.Popen([sys.executable, "-c", DOOMED, kafka_url, topic], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "100", "the doomed member should hold all 100"
        got: list[bridgeq.Delivery] = []
        with broker.subscribe(topic, "g", prefetch=100) as survivor:
            try:
                # The survivor joins while the doomed member lives (at its prefetch limit, still in the
                # group): the group rebalances; what the survivor is given comes from committed offsets.
                early = survivor.receive_batch(100, timeout=3.0)
                assert all(d.id in ids for d in early)
                got.extend(early)
                assert broker.depth(topic, "g") == 100, "nothing acked: all 100 still wait for the group"
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
            killed = time.monotonic()
            deadline = killed + broker.capabilities.crash_redelivery_seconds
            while len({d.id for d in got}) < 100 and time.monotonic() < deadline:
                for delivery in survivor.receive_batch(100, timeout=0.5):
                    got.append(delivery)
                    delivery.ack()
            for delivery in got:
                if delivery.state is delivery.state.PENDING:
                    delivery.ack()
            took = time.monotonic() - killed
        assert sorted({d.id for d in got}) == sorted(ids), f"lost {len(set(ids) - {d.id for d in got})}"
        assert took <= broker.capabilities.crash_redelivery_seconds
        assert broker.depth(topic, "g") == 0


def test_a_member_that_closes_hands_its_partitions_over_at_once(kafka_url, topic) -> None:
    """close() leaves the group: the other member gets the unacked messages without a session timeout."""
    with bridgeq.connect(kafka_url) as broker:
        broker.declare(topic, "g")
        ids = broker.publish_batch(topic, [bridgeq.Message(f"m{i}", key=f"k{i}") for i in range(30)])
        first = broker.subscribe(topic, "g", prefetch=100)
        held = []
        while len(held) < 30:
            held.extend(first.receive_batch(30, timeout=5.0))
        second = broker.subscribe(topic, "g", prefetch=100)
        stop = threading.Event()

        def keep_polling() -> None:  # the first member must poll to take part in the rebalance
            while not stop.is_set():
                first.receive(timeout=0.1)

        poller = threading.Thread(target=keep_polling)
        poller.start()
        got = second.receive_batch(100, timeout=2.0)  # join while the first holds everything
        stop.set()
        poller.join()
        first.close()
        closed = time.monotonic()
        while len({d.id for d in got}) < 30 and time.monotonic() - closed < 10:
            for delivery in second.receive_batch(100, timeout=0.5):
                got.append(delivery)
                delivery.ack()
        took = time.monotonic() - closed
        second.close()
        assert {d.id for d in got} == set(ids)
        assert took < broker.capabilities.crash_redelivery_seconds / 2, f"took {took:.1f} s: like a crash"
