"""amqp:// through bridgeq against raw pika on the same RabbitMQ server, in one run.

    python benchmarks/bench_rabbitmq.py --url amqp://guest:guest@127.0.0.1:5672/%2F
                                        [--messages N] [--size BYTES] [--rounds R] [--json]

Every row publishes to a durable fanout exchange routed to durable queues of the same type
(quorum, bridgeq's default), persistent messages (delivery_mode 2) on both sides:

- confirmed batch publish: ``publish_batch`` (confirms pipelined) vs pika's BlockingConnection
  with ``confirm_delivery()`` and ``basic_publish`` per message (it waits for each confirm);
- confirmed publish from 8 threads: ``publish`` (one message a call) on one shared broker vs
  the same raw loop (raw pika has no thread-safe equivalent; it is the raw row above);
- unconfirmed publish: ``publish_batch`` on ``?confirm=false`` vs ``basic_publish`` on a
  BlockingConnection without confirms;
- consume: ``receive_batch(100)`` + ``ack`` with prefetch 100 vs ``basic_consume`` +
  ``basic_ack`` per message with ``basic_qos(prefetch_count=100)`` (a topic with two groups,
  both filled by one publish, so both sides read the same messages);
- publish->receive latency p50/p99: one message in flight, confirmed publish, a consumer in
  another process (samples pooled over the rounds).

Each throughput cell is the median over ``--rounds`` rounds (bridgeq and raw alternating);
the ratio is bridgeq/raw (for latency raw/bridgeq, so >= 1 always favours bridgeq).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import common
import pika
from rich.console import Console
from rich.table import Table

import bridgeq
from bridgeq.url import parse

GOALS = {"confirmed batch publish": 10.0, "consume (prefetch 100)": 0.95}


def raw_parameters(url: str) -> pika.ConnectionParameters:
    u = parse(url)
    host = u.hosts[0]
    return pika.ConnectionParameters(
        host=host.name,
        port=host.port or 5672,
        virtual_host=u.path or "/",
        credentials=pika.PlainCredentials(u.username or "guest", u.password or "guest"),
    )


def with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


class Bench:
    def __init__(self, url: str, messages: int, size: int) -> None:
        self.url = url
        self.broker = bridgeq.connect(url)
        self.unconfirmed = bridgeq.connect(with_option(url, "confirm=false"))
        self.params = raw_parameters(url)
        self.raw = pika.BlockingConnection(self.params)
        self.admin = self.raw.channel()
        self.messages, self.size, self.body = messages, size, b"x" * size
        self.topics: list[str] = []
        self.backend: Any = self.broker.backend

    # -- names: bridgeq declares; raw pika uses the same exchange and queue layout -----------

    def topic(self, *groups: str) -> str:
        name = f"bench-amqp-{uuid.uuid4().hex[:8]}"
        self.topics.append(name)
        for group in groups or ("g",):
            self.broker.declare(name, group)
        return name

    def exchange(self, topic: str) -> str:
        return str(self.backend._exchange(topic))

    def queue(self, topic: str, group: str = "g") -> str:
        return str(self.backend._queue(topic, group))

    def close(self) -> None:
        for name in self.topics:
            self.broker.delete(name)
        self.unconfirmed.close()
        self.broker.close()
        self.raw.close()

    # -- rows ---------------------------------------------------------------------------------

    def bridgeq_batch(self, broker: bridgeq.Broker, settle: bool = False) -> float:
        topic = self.topic()
        messages = [bridgeq.Message(self.body) for _ in range(self.messages)]

        def run() -> None:
            broker.publish_batch(topic, messages)
            if settle:  # unconfirmed: end with one round trip, as the raw side does
                broker.depth(topic, "g")

        return self.messages / common.elapsed(run)

    def bridgeq_threads(self, threads: int = 8) -> float:
        topic = self.topic()
        per_thread = self.messages // threads

        def work() -> None:
            for _ in range(per_thread):
                self.broker.publish(topic, self.body)

        def run() -> None:
            workers = [threading.Thread(target=work) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        return per_thread * threads / common.elapsed(run)

    def raw_publish(self, confirm: bool) -> float:
        topic = self.topic()
        exchange = self.exchange(topic)
        channel = self.raw.channel()
        if confirm:
            channel.confirm_delivery()
        body, count = self.body, self.messages

        def run() -> None:
            for _ in range(count):
                properties = pika.BasicProperties(delivery_mode=2, message_id=uuid.uuid4().hex)
                channel.basic_publish(exchange, "", body, properties)
            if not confirm:  # the same end point as bridgeq's: the broker has them all
                channel.queue_declare(self.queue(topic), passive=True)

        rate = count / common.elapsed(run)
        channel.close()
        return rate

    def consume_pair(self) -> tuple[float, float]:
        """Both sides read the same messages: one publish, two groups."""
        topic = self.topic("bq", "raw")
        self.broker.publish_batch(topic, [bridgeq.Message(self.body) for _ in range(self.messages)])
        count = self.messages

        def bridgeq_side() -> None:
            got = 0
            with self.broker.subscribe(topic, "bq", prefetch=100) as sub:
                while got < count:
                    batch = sub.receive_batch(100, timeout=5.0)
                    if not batch:
                        raise RuntimeError("bridgeq consume stalled")
                    for delivery in batch:
                        delivery.ack()
                    got += len(batch)

        def raw_side() -> None:
            channel = self.raw.channel()
            channel.basic_qos(prefetch_count=100)
            got = 0

            def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
                nonlocal got
                ch.basic_ack(method.delivery_tag)
                got += 1
                if got == count:
                    ch.stop_consuming()

            channel.basic_consume(self.queue(topic, "raw"), on_message)
            channel.start_consuming()
            channel.close()

        first, second = (bridgeq_side, raw_side) if len(self.topics) % 2 else (raw_side, bridgeq_side)
        times = {first: common.elapsed(first), second: common.elapsed(second)}
        return count / times[bridgeq_side], count / times[raw_side]

    def latency(self, mode: str, samples: int) -> list[float]:
        topic = self.topic()
        child = subprocess.Popen(
            [sys.executable, "-c", LATENCY_CONSUMER, mode, self.url, topic, self.queue(topic)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        try:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("latency consumer failed to start")
            channel = None
            if mode == "raw":
                channel = self.raw.channel()
                channel.confirm_delivery()
            exchange = self.exchange(topic)
            found: list[float] = []
            for n in range(samples + 10):
                started = time.monotonic()
                if channel is None:
                    self.broker.publish(topic, self.body, id=f"m{n}")
                else:
                    channel.basic_publish(exchange, "", self.body, pika.BasicProperties(delivery_mode=2))
                received = float(child.stdout.readline())
                if n >= 10:  # warm-up
                    found.append(received - started)
            if channel is not None:
                channel.close()
            return found
        finally:
            child.kill()
            child.wait()


LATENCY_CONSUMER = """
import sys, time
mode, url, topic, queue = sys.argv[1:5]
if mode == "bridgeq":
    import bridgeq
    broker = bridgeq.connect(url)
    with broker.subscribe(topic, "g", prefetch=100) as sub:
        print("ready", flush=True)
        while True:
            for d in sub.receive_batch(100, timeout=1.0):
                print(time.monotonic(), flush=True)
                d.ack()
else:
    import pika
    sys.path.insert(0, ".")
    from bridgeq.url import parse
    u = parse(url)
    params = pika.ConnectionParameters(u.hosts[0].name, u.hosts[0].port or 5672, u.path or "/",
                                       pika.PlainCredentials(u.username or "guest", u.password or "guest"))
    channel = pika.BlockingConnection(params).channel()
    channel.basic_qos(prefetch_count=100)
    def on_message(ch, method, properties, body):
        print(time.monotonic(), flush=True)
        ch.basic_ack(method.delivery_tag)
    channel.basic_consume(queue, on_message)
    print("ready", flush=True)
    channel.start_consuming()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(url: str, messages: int, size: int, rounds: int, samples: int) -> list[dict[str, Any]]:
    bench = Bench(url, messages, size)
    results: dict[str, list[tuple[float, float]]] = {}

    def add(row: str, ours: float, theirs: float) -> None:
        results.setdefault(row, []).append((ours, theirs))

    try:
        bench.bridgeq_batch(bench.broker)  # warm-up: connections, code paths, the broker's queues
        for _ in range(rounds):
            raw_confirmed = bench.raw_publish(confirm=True)
            add("confirmed batch publish", bench.bridgeq_batch(bench.broker), raw_confirmed)
            add("confirmed publish, 8 threads", bench.bridgeq_threads(), raw_confirmed)
            add("unconfirmed publish", bench.bridgeq_batch(bench.unconfirmed, settle=True), bench.raw_publish(False))
            add("consume (prefetch 100)", *bench.consume_pair())
        ours_latency = bench.latency("bridgeq", samples)
        raw_latency = bench.latency("raw", samples)
    finally:
        bench.close()
    rows = []
    for r in common.paired_rows(results):
        rows.append({"row": r["row"], "unit": "msg/s", **r, "goal": GOALS.get(r["row"])})
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        ours, theirs = percentile(ours_latency, q) * 1000, percentile(raw_latency, q) * 1000
        rows.append(
            {
                "row": f"publish->receive {name}",
                "unit": "ms",
                "bridgeq": ours,
                "raw": theirs,
                "ratio": theirs / ours,
                "goal": None,
            }
        )
    return rows


def main() -> None:
    parser = common.base_parser(
        __doc__, url="amqp://guest:guest@127.0.0.1:5672/%2F", messages=10000, rounds=3, samples=500,
        samples_help="latency samples per side", size_help="body bytes", json_help="print JSON instead of a table",
        full_doc=False,
    )  # fmt: skip
    args = parser.parse_args()
    rows = run(args.url, args.messages, args.size, args.rounds, args.samples)
    if args.json:
        print(json.dumps(common.result_dict(args.url, rows, messages=args.messages, size=args.size)))
        return
    table = Table(title=f"bridgeq vs raw pika on {parse(args.url)}: {args.messages} x {args.size} B, durable")
    for column in ("row", "bridgeq", "raw pika", "ratio", "goal"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for r in rows:
        fmt = "{:,.0f} msg/s" if r["unit"] == "msg/s" else "{:.2f} ms"
        goal = "" if r["goal"] is None else (f">= {r['goal']:g}x " + ("ok" if r["ratio"] >= r["goal"] else "MISSED"))
        table.add_row(r["row"], fmt.format(r["bridgeq"]), fmt.format(r["raw"]), f"{r['ratio']:.2f}x", goal)
    Console().print(table)
    print("ratio = bridgeq/raw for throughput, raw/bridgeq for latency: >= 1 favours bridgeq")


if __name__ == "__main__":
    main()
