"""redis:// through bridgeq against raw redis-py on the same server, in one run.

    python benchmarks/bench_redis.py --url redis://127.0.0.1:6379/0 [--messages N] [--batch B]
                                     [--size BYTES] [--rounds R] [--json]

Rows (each the median of ``--rounds`` interleaved rounds, bridgeq and raw alternating):

- single publish: ``broker.publish`` vs ``XADD`` (one round trip each);
- batch publish: ``broker.publish_batch`` vs a pipeline (transaction=False) of XADDs;
- consume: ``receive_batch`` + ``ack`` vs ``XREADGROUP COUNT B`` + ``XACK``, reading the same
  entries (two groups on one stream filled by bridgeq);
- publish->receive latency p50/p99: one message in flight, a consumer process blocked in
  ``receive`` vs in ``XREADGROUP BLOCK`` (samples taken in every round, pooled).

Throughput cells are medians over the rounds; their ratio is the median of the rounds' paired
ratios (robust to a busy machine). Latency ratios are raw/bridgeq, so >= 1 favours bridgeq.

The raw side writes the body as its only field; bridgeq adds its id (``ce_id``, 32 bytes):
the rows measure what each costs as a user would write it. No trimming either side.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import common
import redis

import bridgeq
from bridgeq.subscription import Subscription


class Bench:
    def __init__(self, url: str, messages: int, batch: int, size: int) -> None:
        self.url = url
        self.broker = bridgeq.connect(url)
        self.raw: Any = common.raw_redis(url)  # redis-py's reply types are too wide to be useful here
        self.prefix = self.broker.backend.options.prefix  # type: ignore[attr-defined]
        self.messages, self.batch, self.body = messages, batch, b"x" * size
        self.topics: list[str] = []

    def topic(self) -> str:
        name = f"bench-redis-{uuid.uuid4().hex[:8]}"
        self.topics.append(name)
        return name

    def close(self) -> None:
        common.close_all(self.broker, self.topics, self.raw)

    # -- publish -------------------------------------------------------------------------

    def single_bridgeq(self, n: int) -> float:
        topic, body, publish = self.topic(), self.body, self.broker.publish

        def run() -> None:
            for _ in range(n):
                publish(topic, body)

        return common.rate(n, run)

    def single_raw(self, n: int) -> float:
        key, fields, xadd = self.prefix + self.topic(), {"body": self.body}, self.raw.xadd

        def run() -> None:
            for _ in range(n):
                xadd(key, fields)

        return common.rate(n, run)

    def batch_bridgeq(self) -> float:
        topic, body, batch = self.topic(), self.body, self.batch

        def run() -> None:
            for _ in range(self.messages // batch):
                self.broker.publish_batch(topic, [bridgeq.Message(body) for _ in range(batch)])

        return common.rate(self.messages, run)

    def batch_raw(self) -> float:
        key, body, batch = self.prefix + self.topic(), self.body, self.batch

        def run() -> None:
            for _ in range(self.messages // batch):
                pipe = self.raw.pipeline(transaction=False)
                for _ in range(batch):
                    pipe.xadd(key, {"body": body})
                pipe.execute()

        return common.rate(self.messages, run)

    # -- consume -------------------------------------------------------------------------

    def filled(self) -> str:
        """A stream of ``messages`` bridgeq entries, with groups 'bq' and 'raw' at its start."""
        return common.fill(self.broker, self.topic(), self.messages, self.batch, self.body)

    def consume_bridgeq(self, topic: str, bulk_ack: bool, read_ahead: bool = False) -> float:
        batch = self.batch
        prefetch = 2 * batch if read_ahead else batch  # room for the batch read ahead
        with self.broker.subscribe(topic, "bq", prefetch=prefetch, max_deliveries=None, read_ahead=read_ahead) as sub:

            def run() -> None:
                received = 0
                while received < self.messages:
                    got = sub.receive_batch(batch, timeout=5)
                    if not got:
                        raise TimeoutError(f"only {received} of {self.messages} came back")
                    if bulk_ack:
                        sub.ack(got)
                    else:
                        for delivery in got:
                            delivery.ack()
                    received += len(got)
                sub.flush()

            result = common.rate(self.messages, run)
        assert self.broker.depth(topic, "bq") == 0
        return result

    def consume_raw(self, topic: str) -> float:
        key, batch, r = self.prefix + topic, self.batch, self.raw

        def run() -> None:
            received = 0
            while received < self.messages:
                reply = r.xreadgroup("raw", "raw-1", {key: ">"}, count=batch, block=100)
                if not reply:
                    raise TimeoutError(f"only {received} of {self.messages} came back")
                entries = reply[0][1]
                r.xack(key, "raw", *[entry_id for entry_id, _ in entries])
                received += len(entries)

        result = common.rate(self.messages, run)
        assert r.xpending(key, "raw")["pending"] == 0
        return result

    # -- latency -------------------------------------------------------------------------

    def latency(self, side: str, samples: int) -> list[float]:
        """Milliseconds from publish to receive, one message in flight, the consumer in its own process
        (so it never waits for this process's GIL); both read time.perf_counter (CLOCK_MONOTONIC)."""
        topic = self.topic()
        if side == "bridgeq":
            self.broker.declare(topic, "lat")
            send: Callable[[str], Any] = lambda sent: self.broker.publish(topic, self.body, headers={"sent": sent})  # noqa: E731
        else:
            key = self.prefix + topic
            self.raw.xgroup_create(key, "lat", "$", mkstream=True)
            send = lambda sent: self.raw.xadd(key, {"body": self.body, "sent": sent})  # noqa: E731
        argv = [side, self.url, topic, self.prefix, str(samples)]
        return common.child_latencies(LATENCY_CONSUMER, argv, send, samples, settle=0.3, wait=10)


LATENCY_CONSUMER = """
import sys, time
side, url, topic, prefix, samples = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
if side == "bridgeq":
    import bridgeq
    from common import bridgeq_latencies
    bridgeq_latencies(bridgeq.connect(url), topic, samples, warm=0.05, timeout=5)
else:
    sys.path.insert(0, "")
    from common import raw_redis
    r = raw_redis(url)
    key = prefix + topic
    r.xreadgroup("lat", "c", {key: ">"}, count=1, block=50)
    print("ready", flush=True)
    for _ in range(samples):
        reply = r.xreadgroup("lat", "c", {key: ">"}, count=1, block=5000)
        (entry_id, fields), = reply[0][1]
        print((time.perf_counter() - float(fields[b"sent"])) * 1000, flush=True)
        r.xack(key, "lat", entry_id)
"""


def main() -> None:
    parser = common.base_parser(
        __doc__, url="redis://127.0.0.1:6379/0", messages=50_000, rounds=5, samples=1_000, single=5_000,
        after={"--messages": [("--batch", {"type": int, "default": 100})]},
    )  # fmt: skip
    args = parser.parse_args()
    args.messages -= args.messages % args.batch
    bench = Bench(args.url, args.messages, args.batch, args.size)
    rows: dict[str, list[tuple[float, float]]] = {
        "single publish (msg/s)": [],
        f"batch publish, {args.batch}/batch (msg/s)": [],
        f"consume: receive_batch({args.batch}) + d.ack() (msg/s)": [],
    }
    if hasattr(Subscription, "ack"):
        rows[f"consume: receive_batch({args.batch}) + sub.ack(batch) (msg/s)"] = []
        rows[f"consume: the same, read_ahead=True, prefetch {2 * args.batch} (msg/s)"] = []
    single, batched, consume, *consume_bulk = rows.values()
    try:
        bench.single_bridgeq(500), bench.single_raw(500), bench.batch_bridgeq(), bench.batch_raw()  # warm-up
        lat_bq: list[float] = []
        lat_raw: list[float] = []
        per_round = max(args.samples // args.rounds, 20)
        for _ in range(args.rounds):
            single.append((bench.single_bridgeq(args.single), bench.single_raw(args.single)))
            batched.append((bench.batch_bridgeq(), bench.batch_raw()))
            topic = bench.filled()
            consume.append((bench.consume_bridgeq(topic, bulk_ack=False), bench.consume_raw(topic)))
            for row, read_ahead in zip(consume_bulk, (False, True), strict=False):
                topic = bench.filled()
                row.append((bench.consume_bridgeq(topic, True, read_ahead), bench.consume_raw(topic)))
            lat_bq += bench.latency("bridgeq", per_round)
            lat_raw += bench.latency("raw", per_round)
    finally:
        bench.close()
    # the ratio: median of the rounds' paired ratios; latency ratios are raw / bridgeq
    result = common.result_dict(
        args.url, common.paired_rows(rows) + common.latency_rows(lat_bq, lat_raw),
        messages=args.messages, batch=args.batch, size=args.size, rounds=args.rounds,
    )  # fmt: skip
    title = (
        f"bridgeq redis:// vs raw redis-py {redis.__version__}, {result['url']}, "
        f"{args.messages:,} messages of {args.size} B, median of {args.rounds} rounds"
    )
    common.print_result(result, title, "raw redis-py", args.json, ms_format="{:,.3f}")


if __name__ == "__main__":
    main()
