"""What the bench_* scripts share: flags, timing, the latency child, paired rows and the output."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bridgeq.url import parse

HERE = str(Path(__file__).resolve().parent)


def raw_redis(url: str) -> Any:
    """A plain redis-py client for a bridgeq ``redis://`` URL (for raw baselines and broker settings)."""
    import redis

    u = parse(url)
    host = u.hosts[0] if u.hosts else None
    return redis.Redis(
        host=host.name if host else "localhost",
        port=(host.port if host else None) or 6379,
        db=int(u.path.strip("/") or 0),
        username=u.username,
        password=u.password,
        ssl=u.scheme == "rediss",
    )


Pairs = Mapping[str, Sequence[tuple[float, float]]]
"""Per row name, one (bridgeq, raw) measurement a round."""

Extra = Mapping[str, Sequence[tuple[str, dict[str, Any]]]]
"""Per common flag, the script's own flags (name, add_argument keywords) that follow it."""


def base_parser(
    doc: str,
    *,
    url: str,
    messages: int,
    rounds: int,
    samples: int,
    samples_help: str = "latency samples",
    single: int | None = None,
    size_help: str | None = None,
    json_help: str | None = None,
    full_doc: bool = True,
    after: Extra | None = None,
) -> argparse.ArgumentParser:
    """The flags every bench takes (--url --messages --size --rounds [--single] --samples --json), plus ``after``."""
    if full_doc:
        parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])

    def add(flag: str, **options: Any) -> None:
        parser.add_argument(flag, **options)
        for name, extra in (after or {}).get(flag, ()):
            parser.add_argument(name, **extra)

    add("--url", default=url)
    add("--messages", type=int, default=messages)
    add("--size", type=int, default=100, help=size_help)
    add("--rounds", type=int, default=rounds)
    if single is not None:
        add("--single", type=int, default=single, help="messages for the single-publish row")
    add("--samples", type=int, default=samples, help=samples_help)
    add("--json", action="store_true", help=json_help)
    return parser


def fill(broker: Any, topic: str, messages: int, batch: int, body: bytes, groups: Sequence[str] = ("bq", "raw")) -> str:
    """Declare ``groups`` on ``topic``, then publish ``messages`` bodies ``batch`` at a time."""
    for group in groups:
        broker.declare(topic, group)
    for _ in range(messages // batch):
        broker.publish_batch(topic, [body] * batch)
    return topic


def close_all(broker: Any, topics: Sequence[str], *clients: Any) -> None:
    """Delete ``topics``, then close the broker and the raw clients."""
    for name in topics:
        broker.delete(name)
    broker.close()
    for client in clients:
        client.close()


def elapsed(run: Callable[[], object]) -> float:
    """Seconds ``run()`` takes."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def rate(count: int, run: Callable[[], object]) -> float:
    """``count`` over the seconds ``run()`` takes."""
    return count / elapsed(run)


def child_latencies(
    code: str, argv: Sequence[str], send: Callable[[str], Any], samples: int, settle: float, wait: float
) -> list[float]:
    """Milliseconds the consumer child ``code`` prints per message ``send`` publishes with the perf_counter."""
    code = f"import sys; sys.path.append({HERE!r})  # for common\n{code}"
    child = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(settle)  # the consumer is waiting in its read
    latencies = []
    for _ in range(samples):
        send(repr(time.perf_counter()))
        latencies.append(float(child.stdout.readline()))
        time.sleep(0.001)
    child.wait(wait)
    return latencies


def bridgeq_latencies(broker: Any, topic: str, samples: int, warm: float, timeout: float) -> None:
    """In the latency child: print the milliseconds each of ``samples`` bridgeq deliveries took since its 'sent'."""
    sub = broker.subscribe(topic, "lat")
    sub.receive(timeout=warm)
    print("ready", flush=True)
    for _ in range(samples):
        d = sub.receive(timeout=timeout)
        print((time.perf_counter() - float(d.headers["sent"])) * 1000, flush=True)
        d.ack()
    sub.close()


def quantile(values: list[float], q: int) -> float:
    """The ``q``-th percentile of ``values`` (statistics.quantiles, n=100)."""
    return statistics.quantiles(values, n=100)[q - 1]


def paired_rows(rows: Pairs, paired: bool = True) -> list[dict[str, Any]]:
    """Median bridgeq, median raw and a ratio per row: the median of paired ratios, else the medians' ratio."""
    result = []
    for name, pairs in rows.items():
        ours = statistics.median(p[0] for p in pairs)
        theirs = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(p[0] / p[1] for p in pairs) if paired else ours / theirs
        result.append({"row": name, "bridgeq": ours, "raw": theirs, "ratio": ratio})
    return result


def time_row(name: str, ours: float, theirs: float) -> dict[str, Any]:
    """A row where lower is better, so the ratio is raw / bridgeq (>= 1 means bridgeq is faster)."""
    return {"row": name, "bridgeq": ours, "raw": theirs, "ratio": theirs / ours}


def latency_rows(ours: list[float], theirs: list[float]) -> list[dict[str, Any]]:
    """The p50 and p99 publish->receive rows from pooled millisecond samples."""
    return [
        time_row(f"publish->receive p{q} (ms, ratio raw/bridgeq)", quantile(ours, q), quantile(theirs, q))
        for q in (50, 99)
    ]


def result_dict(url: str, rows: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The JSON document: the URL as parsed (password hidden), ``fields`` in order, then the rows."""
    return {"url": str(parse(url)), **fields, "rows": rows}


def print_result(result: dict[str, Any], title: str, raw_name: str, as_json: bool, ms_format: str = "{:,.2f}") -> None:
    """Print ``result`` as indented JSON or as a table of row, bridgeq, ``raw_name`` and ratio."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=title)
    table.add_column("row")
    table.add_column("bridgeq", justify="right")
    table.add_column(raw_name, justify="right")
    table.add_column("ratio", justify="right")
    for row in result["rows"]:
        fmt = ms_format if "(ms," in row["row"] else "{:,.0f}"
        table.add_row(row["row"], fmt.format(row["bridgeq"]), fmt.format(row["raw"]), f"{row['ratio']:.2f}")
    Console().print(table)
