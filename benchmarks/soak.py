"""Soak: a million messages through one broker, with this process's memory (RSS) sampled.

    python benchmarks/soak.py --url redis://127.0.0.1:6379/0 [--messages 1000000] [--batch 500]
                              [--size 100] [--lag 20000] [--warmup 0.1] [--max-minutes 30]
                              [--max-growth 10] [--json]

A publisher thread publishes batches (``publish_batch``) while the main thread receives
and acks them (``receive_batch`` + ``sub.ack``), both through one broker object, as an
application would; the publisher waits while more than ``--lag`` messages are unread, so
the broker's backlog stays bounded. RSS (``VmRSS`` of /proc/self/status) is sampled every
``--every`` seconds. After the warm-up (the first ``--warmup`` fraction of the messages)
the RSS is the baseline; the growth from there to the end is printed, and the exit status
is 1 when it exceeds ``--max-growth`` percent, or when a message was lost.

Every message's body carries its sequence number; a preallocated bitmap (1 bit per
message) tells lost and duplicated deliveries apart without growing memory itself.
If ``--max-minutes`` runs out first, the figures are those of the count reached.
The topic is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

import bridgeq
from bridgeq.url import parse


def rss_kib() -> int:
    """This process's resident set size, KiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Sample:
    seconds: float
    published: int
    received: int
    rss_mib: float


@dataclass
class SoakResult:
    url: str
    messages: int
    published: int = 0
    received: int = 0
    unique: int = 0
    duplicated: int = 0
    lost: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    warmup_at: int = 0
    rss_start_mib: float = 0.0
    rss_warm_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_peak_after_warmup_mib: float = 0.0
    growth_percent: float = 0.0
    completed: bool = False
    errors: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.topic = f"soak-{uuid.uuid4().hex[:10]}"
        self.group = "soak"
        self.result = SoakResult(str(parse(args.url)), args.messages)
        self.seen = bytearray((args.messages + 7) // 8)
        self.published = 0
        self.received = 0
        self.stop = threading.Event()
        self.room = threading.Condition()

    def publish(self, broker: bridgeq.Broker) -> None:
        args, pad = self.args, b"x" * max(0, self.args.size - 12)
        try:
            for start in range(0, args.messages, args.batch):
                with self.room:
                    while self.published - self.received > args.lag and not self.stop.is_set():
                        self.room.wait(0.1)
                if self.stop.is_set():
                    return
                count = min(args.batch, args.messages - start)
                bodies = [b"%012d" % n + pad for n in range(start, start + count)]
                while True:
                    try:
                        broker.publish_batch(self.topic, bodies)
                        break
                    except (bridgeq.ConnectionLost, bridgeq.PublishError) as exc:
                        self.result.errors.append(f"publish: {type(exc).__name__}: {exc}"[:200])
                        time.sleep(0.5)  # resent whole: duplicates are counted, not lost
                self.published += count
        except Exception as exc:  # reported, and the run stops
            self.result.errors.append(f"publisher: {type(exc).__name__}: {exc}"[:300])
            self.stop.set()

    def run(self) -> SoakResult:
        args, result = self.args, self.result
        result.rss_start_mib = rss_kib() / 1024
        warm_at = max(1, int(args.messages * args.warmup))
        result.warmup_at = warm_at
        deadline = time.monotonic() + args.max_minutes * 60
        with bridgeq.connect(args.url) as broker:
            broker.declare(self.topic, self.group)
            try:
                with broker.subscribe(self.topic, self.group, prefetch=args.batch * 2, max_deliveries=None) as sub:
                    publisher = threading.Thread(target=self.publish, args=(broker,), daemon=True)
                    started = time.monotonic()
                    next_sample = started
                    publisher.start()
                    seen, duplicated = self.seen, 0
                    while self.received < args.messages and not self.stop.is_set():
                        if time.monotonic() > deadline:
                            result.errors.append(f"stopped after {args.max_minutes} minutes")
                            break
                        batch = sub.receive_batch(args.batch, timeout=0.5)
                        for delivery in batch:
                            n = int(delivery.body[:12])
                            byte, bit = n >> 3, 1 << (n & 7)
                            if seen[byte] & bit:
                                duplicated += 1
                            else:
                                seen[byte] |= bit
                                self.received += 1
                        if batch:
                            sub.ack(batch)
                            with self.room:
                                self.room.notify()
                        now = time.monotonic()
                        if not result.rss_warm_mib and self.received >= warm_at:
                            gc.collect()
                            result.rss_warm_mib = rss_kib() / 1024
                        if now >= next_sample:
                            self._sample(now - started)
                            next_sample = now + args.every
                    self.stop.set()
                    publisher.join(30)
                    result.seconds = time.monotonic() - started
                    self._sample(result.seconds)
            finally:
                with contextlib.suppress(bridgeq.BridgeqError):
                    broker.delete(self.topic)
        gc.collect()
        result.rss_end_mib = rss_kib() / 1024
        result.published, result.unique, result.duplicated = self.published, self.received, duplicated
        result.received = self.received + duplicated
        result.lost = max(0, self.published - self.received)
        result.completed = self.received >= args.messages
        result.rate = self.received / result.seconds if result.seconds else 0.0
        warm = result.rss_warm_mib or result.rss_end_mib
        after = [s.rss_mib for s in result.samples if s.received >= warm_at] or [result.rss_end_mib]
        result.rss_peak_after_warmup_mib = max(after)
        result.growth_percent = 100.0 * (result.rss_end_mib - warm) / warm
        return result

    def _sample(self, seconds: float) -> None:
        sample = Sample(round(seconds, 2), self.published, self.received, round(rss_kib() / 1024, 1))
        self.result.samples.append(sample)
        if not self.args.json:
            print(
                f"{sample.seconds:8.1f} s  published {sample.published:>9,}  received {sample.received:>9,}  "
                f"RSS {sample.rss_mib:7.1f} MiB",
                file=sys.stderr,
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--size", type=int, default=100, help="body bytes (at least 12: the sequence number)")
    parser.add_argument("--lag", type=int, default=20_000, help="most messages published and not yet received")
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of the messages before the baseline")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("--max-growth", type=float, default=10.0, help="percent of RSS growth after warm-up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = Soak(args).run()
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        table = Table(title=f"soak {result.url}: {result.messages:,} x {args.size} B, batch {args.batch}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        rows = [
            ("published", f"{result.published:,}"),
            ("received (deliveries)", f"{result.received:,}"),
            ("lost", f"{result.lost:,}" + ("" if result.completed else " (run cut short)")),
            ("duplicated", f"{result.duplicated:,}"),
            ("rate, end to end", f"{result.rate:,.0f} msg/s over {result.seconds:,.1f} s"),
            ("RSS at start", f"{result.rss_start_mib:.1f} MiB"),
            (f"RSS after warm-up ({result.warmup_at:,} messages)", f"{result.rss_warm_mib:.1f} MiB"),
            ("RSS at the end", f"{result.rss_end_mib:.1f} MiB"),
            ("RSS peak after warm-up", f"{result.rss_peak_after_warmup_mib:.1f} MiB"),
            ("growth after warm-up", f"{result.growth_percent:+.1f}% (limit {args.max_growth:g}%)"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        Console().print(table)
        for error in result.errors[:10]:
            print(f"note: {error}", file=sys.stderr)
    ok = result.lost == 0 and result.growth_percent <= args.max_growth
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
