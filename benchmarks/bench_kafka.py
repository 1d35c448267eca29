"""kafka:// through bridgeq against raw kafka-python on the same broker, in one run.

    python benchmarks/bench_kafka.py --url kafka://127.0.0.1:9092 [--messages N] [--batch B]
                                     [--size BYTES] [--rounds R] [--samples S] [--json]

Rows (throughput rows: the median of ``--rounds`` interleaved rounds, bridgeq and raw alternating):

- batch produce: ``broker.publish_batch`` of ``--batch`` messages at a time vs ``KafkaProducer.send``
  of as many and ``flush()``; both wait for every acknowledgement before the next batch;
- the same, raw sending bridgeq's exact record (with its ``ce_id`` header): what bridgeq costs
  beyond its wire format;
- single publish: ``broker.publish`` vs ``send(...).get()``, one message in flight;
- consume + ack: ``receive_batch(B)`` + ``d.ack()`` (one commit per batch) vs ``poll(max_records=B)``
  + ``commit()``, fresh groups reading the same topic filled by bridgeq, timed from the first
  batch (joining is its own row);
- consume + batch ack: the same with ``sub.ack(batch)``, one call per batch like raw's ``commit()``;
- publish->receive latency p50/p99: one message in flight, the consumer in its own process;
- group join: from creating a consumer of a fresh group to its first record (a message waits).

Both sides use the same producer settings (acks=all, idempotent, the URL's batch_size and
linger_ms, max_request_size); raw keeps kafka-python's default partitioner. The raw side
sends the body as the record value and nothing else; bridgeq adds its id header (``ce_id``,
32 bytes): the first row measures what each costs as a user would write it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import common
import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

import bridgeq
from bridgeq.message import new_id


class Bench:
    def __init__(self, url: str, messages: int, batch: int, size: int) -> None:
        self.url = url
        self.broker = bridgeq.connect(url)
        backend: Any = self.broker.backend
        self.common: dict[str, Any] = backend.client_settings()
        self.producer_settings: dict[str, Any] = backend.producer_settings()
        self.prefix: str = backend.options.prefix
        self.raw = KafkaProducer(**self.common, **self.producer_settings)
        self.admin = KafkaAdminClient(**self.common)
        self.messages, self.batch, self.body = messages, batch, b"x" * size
        self.topics: list[str] = []

    def topic(self) -> str:
        name = f"bench-kafka-{uuid.uuid4().hex[:8]}"
        self.topics.append(name)
        self.broker.declare(name)
        return name

    def close(self) -> None:
        common.close_all(self.broker, self.topics, self.raw, self.admin)

    # -- produce -------------------------------------------------------------------------

    def produce_bridgeq(self) -> float:
        topic, body, batch, publish_batch = self.topic(), self.body, self.batch, self.broker.publish_batch
        self.broker.publish(topic, body)  # the producer learns the new topic's partitions before the clock starts
        return common.rate(
            self.messages,
            lambda: [publish_batch(topic, [body] * batch) for _ in range(self.messages // batch)] and None,
        )

    def produce_raw(self, with_id: bool = False) -> float:
        name, body, batch, send = self.prefix + self.topic(), self.body, self.batch, self.raw.send
        send(name, body).get(30)

        def run() -> None:
            for _ in range(self.messages // batch):
                if with_id:
                    for _ in range(batch):
                        send(name, body, None, [("ce_id", new_id().encode())])
                else:
                    for _ in range(batch):
                        send(name, body)
                self.raw.flush()

        return common.rate(self.messages, run)

    def single_bridgeq(self, n: int) -> float:
        topic, body, publish = self.topic(), self.body, self.broker.publish
        publish(topic, body)  # the producer learns the new topic's partitions before the clock starts
        return common.rate(n, lambda: [publish(topic, body) for _ in range(n)] and None)

    def single_raw(self, n: int) -> float:
        name, body, send = self.prefix + self.topic(), self.body, self.raw.send
        send(name, body).get(30)
        return common.rate(n, lambda: [send(name, body).get(30) for _ in range(n)] and None)

    # -- consume -------------------------------------------------------------------------

    def filled(self) -> str:
        """A topic of ``messages`` bridgeq records, with groups 'bq', 'bq-batch' and 'raw' at its start."""
        return common.fill(self.broker, self.topic(), self.messages, self.batch, self.body, ("bq", "bq-batch", "raw"))

    def consume_bridgeq(self, topic: str, batch_ack: bool = False) -> float:
        batch = self.batch_consume
        group = "bq-batch" if batch_ack else "bq"
        with self.broker.subscribe(topic, group, prefetch=batch, max_deliveries=None) as sub:
            got = sub.receive_batch(batch, timeout=30)
            started = time.perf_counter()
            received = len(got)
            while True:
                if batch_ack:
                    sub.ack(got)
                else:
                    for delivery in got:
                        delivery.ack()
                if received >= self.messages:
                    break
                got = sub.receive_batch(batch, timeout=5)
                if not got:
                    raise TimeoutError(f"only {received} of {self.messages} came back")
                received += len(got)
            sub.flush()
            result = received / (time.perf_counter() - started)
        assert self.broker.depth(topic, group) == 0
        return result

    def consume_raw(self, topic: str) -> float:
        batch = self.batch_consume
        consumer = KafkaConsumer(
            **self.common, group_id=self.prefix + "raw", enable_auto_commit=False, auto_offset_reset="earliest"
        )
        consumer.subscribe([self.prefix + topic])
        try:
            polled: dict[Any, list[Any]] = {}
            while not polled:
                polled = consumer.poll(timeout_ms=100, max_records=batch)
            started = time.perf_counter()
            received = sum(map(len, polled.values()))
            while True:
                consumer.commit()
                if received >= self.messages:
                    break
                polled = consumer.poll(timeout_ms=5000, max_records=batch)
                if not polled:
                    raise TimeoutError(f"only {received} of {self.messages} came back")
                received += sum(map(len, polled.values()))
            result = received / (time.perf_counter() - started)
        finally:
            consumer.close(autocommit=False)
        assert self.broker.depth(topic, "raw") == 0
        return result

    batch_consume = 500

    # -- latency and joining -------------------------------------------------------------

    def latency(self, side: str, samples: int) -> list[float]:
        """Milliseconds from publish to receive, one message in flight, the consumer in its own process
        (so it never waits for this process's GIL); both read time.perf_counter (CLOCK_MONOTONIC)."""
        topic = self.topic()
        self.broker.declare(topic, "lat")
        if side == "bridgeq":
            send: Callable[[str], Any] = lambda sent: self.broker.publish(topic, self.body, headers={"sent": sent})  # noqa: E731
        else:
            name = self.prefix + topic
            send = lambda sent: self.raw.send(name, self.body, None, [("sent", sent.encode())]).get(30)  # noqa: E731
        argv = [side, self.url, topic, self.prefix, str(samples)]
        return common.child_latencies(LATENCY_CONSUMER, argv, send, samples, settle=0.5, wait=30)

    def join_bridgeq(self) -> float:
        topic, group = self.topic(), f"join-{uuid.uuid4().hex[:8]}"
        self.broker.declare(topic, group)
        self.broker.publish(topic, self.body)
        started = time.perf_counter()
        with self.broker.subscribe(topic, group) as sub:
            delivery = sub.receive(timeout=30)
            elapsed = time.perf_counter() - started
            assert delivery is not None
            delivery.ack()
        return elapsed * 1000

    def join_raw(self) -> float:
        topic = self.topic()
        self.broker.publish(topic, self.body)
        started = time.perf_counter()
        consumer = KafkaConsumer(
            **self.common,
            group_id=f"{self.prefix}join-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumer.subscribe([self.prefix + topic])
        while not consumer.poll(timeout_ms=100, max_records=1):
            pass
        elapsed = time.perf_counter() - started
        consumer.close(autocommit=False)
        return elapsed * 1000


LATENCY_CONSUMER = """
import sys, time
side, url, topic, prefix, samples = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
import bridgeq
broker = bridgeq.connect(url)
if side == "bridgeq":
    from common import bridgeq_latencies
    bridgeq_latencies(broker, topic, samples, warm=1.0, timeout=10)
else:
    from kafka import KafkaConsumer
    c = KafkaConsumer(**broker.backend.client_settings(), group_id=prefix + "lat", enable_auto_commit=False)
    c.subscribe([prefix + topic])
    deadline = time.monotonic() + 30
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(timeout_ms=100)
    print("ready", flush=True)
    done = 0
    while done < samples:
        for records in c.poll(timeout_ms=100).values():
            for r in records:
                sent = float(dict(r.headers)["sent"])
                print((time.perf_counter() - sent) * 1000, flush=True)
                done += 1
            c.commit()
    c.close(autocommit=False)
broker.close()
"""


def main() -> None:
    parser = common.base_parser(
        __doc__, url="kafka://127.0.0.1:9092", messages=50_000, rounds=5, samples=1_000, single=2_000,
        after={
            "--messages": [
                ("--batch", {"type": int, "default": 10_000, "help": "messages per publish_batch / flush"}),
                ("--consume-batch", {"type": int, "default": 500, "help": "receive_batch / poll size (and prefetch)"}),
            ],
            "--samples": [("--joins", {"type": int, "default": 5, "help": "group joins timed per side"})],
        },
    )  # fmt: skip
    args = parser.parse_args()
    args.messages -= args.messages % args.batch
    bench = Bench(args.url, args.messages, args.batch, args.size)
    bench.batch_consume = args.consume_batch
    rows: dict[str, list[tuple[float, float]]] = {
        f"batch produce, {args.batch}/flush (msg/s)": [],
        "batch produce, raw with the same ce_id header (msg/s)": [],
        "single publish (msg/s)": [],
        f"consume + ack, {args.consume_batch}/commit (msg/s)": [],
        f"consume + batch ack (sub.ack), {args.consume_batch}/commit (msg/s)": [],
    }
    produce, produce_same, single, consume, consume_batch_ack = rows.values()
    try:
        version = ".".join(map(str, bench.raw.config["api_version"]))  # the protocol level kafka-python settled on
        bench.produce_bridgeq(), bench.produce_raw(), bench.produce_raw(with_id=True)  # warm-up
        for _ in range(args.rounds):
            produce.append((bench.produce_bridgeq(), bench.produce_raw()))
            produce_same.append((produce[-1][0], bench.produce_raw(with_id=True)))
            single.append((bench.single_bridgeq(args.single), bench.single_raw(args.single)))
            topic = bench.filled()
            consume.append((bench.consume_bridgeq(topic), bench.consume_raw(topic)))
            consume_batch_ack.append((bench.consume_bridgeq(topic, batch_ack=True), consume[-1][1]))
        lat_bq, lat_raw = bench.latency("bridgeq", args.samples), bench.latency("raw", args.samples)
        joins_bq = [bench.join_bridgeq() for _ in range(args.joins)]
        joins_raw = [bench.join_raw() for _ in range(args.joins)]
    finally:
        bench.close()
    # Throughput: the ratio of the medians. Times: lower is better, so the ratio is raw / bridgeq.
    join = common.time_row(
        "group join to first record (ms, ratio raw/bridgeq)", statistics.median(joins_bq), statistics.median(joins_raw)
    )
    result = common.result_dict(
        args.url, [*common.paired_rows(rows, paired=False), *common.latency_rows(lat_bq, lat_raw), join],
        kafka_python=kafka.__version__, protocol_level=version,
        messages=args.messages, batch=args.batch, size=args.size, rounds=args.rounds,
    )  # fmt: skip
    title = (
        f"bridgeq kafka:// vs raw kafka-python {kafka.__version__}, {result['url']} (protocol level {version}), "
        f"{args.messages:,} messages of {args.size} B, median of {args.rounds} rounds"
    )
    common.print_result(result, title, "raw kafka-python", args.json)


if __name__ == "__main__":
    main()
