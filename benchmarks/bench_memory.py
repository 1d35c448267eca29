"""memory:// publish+receive+ack (batched) against queue.Queue put+get, in one process.

    python benchmarks/bench_memory.py [--messages N] [--batch B] [--rounds R] [--json]

Prints a table with both throughputs and the ratio bridgeq/queue.Queue.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import time

from rich.console import Console
from rich.table import Table

import bridgeq


def queue_put_get(messages: int, body: bytes, batch: int) -> float:
    """Messages per second through queue.Queue: put a batch, get it, repeat."""
    q: queue.Queue[bytes] = queue.Queue()
    put, get = q.put, q.get
    started = time.perf_counter()
    for _ in range(0, messages, batch):
        for _ in range(batch):
            put(body)
        for _ in range(batch):
            get()
    return messages / (time.perf_counter() - started)


def bridgeq_batched(broker: bridgeq.Broker, topic: str, messages: int, body: bytes, batch: int) -> float:
    """Messages per second through memory://: publish_batch, receive_batch, sub.ack(batch), repeat."""
    with broker.subscribe(topic, "bench", prefetch=batch, max_deliveries=None) as sub:
        started = time.perf_counter()
        for _ in range(0, messages, batch):
            broker.publish_batch(topic, [bridgeq.Message(body) for _ in range(batch)])
            deliveries = sub.receive_batch(batch, timeout=5)
            assert len(deliveries) == batch
            sub.ack(deliveries)
        sub.flush()
        assert broker.depth(topic, "bench") == 0
        return messages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    body = b"x" * args.size
    messages = args.messages - args.messages % args.batch
    with bridgeq.connect("memory://") as broker:
        broker.declare("bench", "bench")
        bridgeq_batched(broker, "bench", args.batch * 10, body, args.batch)  # warm-up
        queue_put_get(args.batch * 10, body, args.batch)
        ours, baseline = [], []
        for _ in range(args.rounds):  # interleaved, so both see the same machine state
            ours.append(bridgeq_batched(broker, "bench", messages, body, args.batch))
            baseline.append(queue_put_get(messages, body, args.batch))
    result = {
        "messages": messages,
        "batch": args.batch,
        "size": args.size,
        "bridgeq_msg_per_s": statistics.median(ours),
        "queue_msg_per_s": statistics.median(baseline),
    }
    result["ratio"] = result["bridgeq_msg_per_s"] / result["queue_msg_per_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"memory:// vs queue.Queue, {messages:,} messages of {args.size} B, median of {args.rounds}")
    table.add_column("path")
    table.add_column("msg/s", justify="right")
    ours_label = f"bridgeq memory:// publish_batch({args.batch}) + receive_batch + ack(batch)"
    table.add_row(ours_label, f"{result['bridgeq_msg_per_s']:,.0f}")
    table.add_row(f"queue.Queue put x {args.batch} + get x {args.batch}", f"{result['queue_msg_per_s']:,.0f}")
    table.add_row("ratio bridgeq / queue.Queue", f"{result['ratio']:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
