"""Migration throughput against its two limits, measured in one run.

    python benchmarks/bench_migrate.py --source URL --destination URL [--messages N] [--batch B]
                                       [--rounds R] [--in-process] [--json]

Rows: bridgeq's own consume rate on the source (receive_batch + ack), the same
with ``read_ahead`` (as the migration reads), its batch publish rate on the
destination, and the migration's rate (with a checkpoint, fsynced per batch);
the ratios are migration / min(consume, publish), with either consume. Each round
measures all four in turn, on fresh topics; the table shows each row's median
over the rounds (so a burst of load from elsewhere on the machine skews one
sample, not the ratio) and the range. On a Redis URL the benchmark pauses Redis's
automatic AOF rewrites and RDB snapshots while it measures (its settings are put
back at the end; ``--keep-redis-saves`` leaves them alone): each forks Redis and,
on a small machine, takes a third of a core from whichever row runs then.
``--in-process`` reads and publishes from
threads of the benchmark's process instead of the migration's child processes.
The migration's rate counts from its first message read (its child processes
connected), as consume's counts from its first batch and publish's from the end
of its first batch: no client's start-up is in any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

from common import raw_redis
from rich.console import Console
from rich.table import Table

import bridgeq
from bridgeq.migration import DEFAULT_GROUP
from bridgeq.url import resolve

REDIS_SAVES = {"auto-aof-rewrite-percentage": "0", "save": ""}
"""Redis settings that stop its automatic background saves (each a fork of the server)."""
SAVING = ("aof_rewrite_in_progress", "rdb_bgsave_in_progress")


def fill(url: str, topic: str, messages: int, size: int, batch: int, group: str) -> float:
    """Publish ``messages`` to ``topic`` in batches (``group`` declared first); returns msg/s from the
    end of the first batch, so that the client's start (a Kafka producer's, say) is not in it."""
    with bridgeq.connect(url) as broker:
        broker.declare(topic, group)
        body = b"x" * size
        first = min(batch, messages)
        broker.publish_batch(topic, [bridgeq.Message(body) for _ in range(first)])
        started = time.perf_counter()
        for done in range(first, messages, batch):
            broker.publish_batch(topic, [bridgeq.Message(body) for _ in range(min(batch, messages - done))])
        return (messages - first) / (time.perf_counter() - started)


def consume(url: str, topic: str, group: str, messages: int, batch: int, read_ahead: bool) -> float:
    """Read ``messages`` as ``group`` with receive_batch + ack; returns msg/s from the first delivery."""
    with (
        bridgeq.connect(url) as broker,
        broker.subscribe(topic, group, prefetch=batch * 2, read_ahead=read_ahead) as sub,
    ):
        first = sub.receive_batch(batch, timeout=30)
        started = time.perf_counter()
        sub.ack(first)
        received = len(first)
        while received < messages:
            got = sub.receive_batch(batch, timeout=30)
            if not got:
                raise TimeoutError(f"only {received} of {messages} came back")
            sub.ack(got)
            received += len(got)
        sub.flush()
        return (messages - len(first)) / (time.perf_counter() - started)


@contextlib.contextmanager
def redis_saves_paused(urls: list[str]) -> Iterator[int]:
    """Pause the automatic AOF rewrites and RDB snapshots of the Redis servers among ``urls`` (once the
    save running, if any, is done); their settings come back afterwards. Yields how many were paused."""
    paused: list[tuple[Any, dict[str, str]]] = []
    try:
        for url in dict.fromkeys(urls):
            if resolve(url).scheme not in ("redis", "rediss"):
                continue
            client = raw_redis(url)
            before = {name: client.config_get(name)[name] for name in REDIS_SAVES}
            paused.append((client, before))
            _configure(client, REDIS_SAVES)
            while any(int(client.info("persistence")[busy]) for busy in SAVING):
                time.sleep(0.1)
        yield len(paused)
    finally:
        for client, before in paused:
            _configure(client, before)
            client.close()


def _configure(client: Any, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        client.config_set(name, value)


class Round(NamedTuple):
    """One round's rates, msg/s."""

    consume: float
    consume_read_ahead: float
    publish: float
    migration: float


def one_round(args: argparse.Namespace) -> Round:
    """Consume (both ways), publish and migration rates, each on fresh topics (deleted afterwards)."""
    tag = uuid.uuid4().hex[:8]
    consumed, ahead, published, migrated = (f"bm-{row}-{tag}" for row in ("consume", "ahead", "publish", "migrate"))
    try:
        fill(args.source, consumed, args.messages, args.size, args.batch, "bench")
        consume_rate = consume(args.source, consumed, "bench", args.messages, args.batch, read_ahead=False)
        fill(args.source, ahead, args.messages, args.size, args.batch, "bench")
        ahead_rate = consume(args.source, ahead, "bench", args.messages, args.batch, read_ahead=True)
        publish_rate = fill(args.destination, published, args.messages, args.size, args.batch, "bench")
        fill(args.source, migrated, args.messages, args.size, args.batch, DEFAULT_GROUP)
        with tempfile.TemporaryDirectory() as folder:
            report = bridgeq.migrate(
                args.source,
                args.destination,
                migrated,
                batch=args.batch,
                checkpoint=f"{folder}/ck",
                idle_timeout=1.0,
                publisher_process=False if args.in_process else None,
                source_process=False if args.in_process else None,
            )
        assert report.moved == args.messages, report
    finally:
        for url, topics in ((args.source, (consumed, ahead, migrated)), (args.destination, (published, migrated))):
            with bridgeq.connect(url) as broker:
                for topic in topics:
                    broker.delete(topic)
    return Round(consume_rate, ahead_rate, publish_rate, report.rate)


def ratios(rates: Round) -> tuple[float, float]:
    """Migration / the slower of consume and publish: with consume as is, and with read_ahead."""
    return (
        rates.migration / min(rates.consume, rates.publish),
        rates.migration / min(rates.consume_read_ahead, rates.publish),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True)
    parser.add_argument("--destination", required=True)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all three measurements (medians shown)")
    parser.add_argument("--in-process", action="store_true", help="read and publish from threads, not child processes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-redis-saves", action="store_true", help="leave Redis's background saves on")
    args = parser.parse_args()
    urls = [] if args.keep_redis_saves else [args.source, args.destination]
    with redis_saves_paused(urls) as paused:
        rounds = [one_round(args) for _ in range(max(1, args.rounds))]
    median = Round(*(statistics.median(column) for column in zip(*rounds, strict=True)))
    ratio, ratio_ahead = ratios(median)
    result = {
        "source": str(resolve(args.source)),
        "destination": str(resolve(args.destination)),
        "messages": args.messages,
        "rounds": len(rounds),
        "publisher": "thread" if args.in_process else "auto",
        "redis_saves_paused": bool(paused),
        "consume_rate_source": median.consume,
        "consume_read_ahead_rate_source": median.consume_read_ahead,
        "publish_rate_destination": median.publish,
        "migration_rate": median.migration,
        "ratio": ratio,
        "ratio_read_ahead": ratio_ahead,
        "per_round": [
            {**rates._asdict(), "ratio": both[0], "ratio_read_ahead": both[1]}
            for rates, both in ((rates, ratios(rates)) for rates in rounds)
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    title = (
        f"migrate {result['source']} -> {result['destination']}: "
        f"{args.messages:,} x {args.size} B, median of {len(rounds)} round(s)"
        + (", Redis background saves paused" if paused else "")
    )
    table = Table(title=title)
    table.add_column("row")
    table.add_column("msg/s", justify="right")
    table.add_column("range", justify="right")
    labels = (
        "bridgeq consume on the source (receive_batch + ack)",
        "the same, read_ahead=True (as the migration reads)",
        "bridgeq batch publish on the destination",
        "migration (checkpointed, confirmed, acked)",
    )
    for label, rate, column in zip(labels, median, zip(*rounds, strict=True), strict=True):
        table.add_row(label, f"{rate:,.0f}", f"{min(column):,.0f} - {max(column):,.0f}")
    for label, value, key in (
        ("ratio migration / slower of consume and publish", ratio, "ratio"),
        ("the same with consume read_ahead=True", ratio_ahead, "ratio_read_ahead"),
    ):
        per_round = [r[key] for r in result["per_round"]]
        table.add_row(label, f"{value:.2f}x", f"{min(per_round):.2f} - {max(per_round):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
