"""The ``bridgeq`` command. Errors print one line (no traceback) and exit non-zero."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

import bridgeq
from bridgeq.bench import BenchResult
from bridgeq.errors import BridgeqError, ConfigError
from bridgeq.metrics import QueueModel, RateSampler, format_seconds

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_USAGE = 2


class Command(click.Group):
    """Turns every bridgeq error and usage error into one line on stderr and an exit code."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            err.print("bridgeq: interrupted")
            sys.exit(130)
        except click.UsageError as exc:
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
            _say(f"bridgeq: error: {exc.format_message()}{where}")
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            _say(f"bridgeq: error: {exc.format_message()}")
            sys.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _fail(exc, EXIT_USAGE)
        except BridgeqError as exc:
            _fail(exc, EXIT_FAILED)
        except KeyboardInterrupt:
            err.print("bridgeq: interrupted")
            sys.exit(130)


def _say(line: str) -> None:
    """One unwrapped line on stderr (rich would wrap it at the terminal width)."""
    click.echo(" ".join(line.split()), err=True)


def _fail(exc: BaseException, code: int) -> None:
    _say(f"bridgeq: error: {exc}")
    sys.exit(code)


@click.group(cls=Command)
@click.version_option(bridgeq.__version__, prog_name="bridgeq")
def main() -> None:
    """One producer/consumer interface over RabbitMQ, Redis Streams, Kafka and memory."""


@contextmanager
def _connected(url: str | None) -> Iterator[bridgeq.Broker]:
    with bridgeq.connect(url) as broker:
        yield broker


def _model_table(model: QueueModel, title: str, extra: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    for column in ("L (waiting)", "R (published/s)", "C (acked/s)", "dL/dt", "drain estimate"):
        table.add_column(column, justify="right")
    for name in extra or {}:
        table.add_column(name, justify="right")
    table.add_row(
        _number(model.depth),
        _number(model.publish_rate),
        _number(model.consume_rate),
        _number(model.growth),
        format_seconds(model.drain_seconds),
        *(extra or {}).values(),
    )
    return table


def _number(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:,.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:,.1f}"


@main.command()
@click.option("--url", default=None, help="broker URL (default: $BRIDGEQ_URL, then memory://)")
@click.option("--messages", default=40_000, show_default=True, help="messages the producer publishes")
@click.option("--rate", default=10_000.0, show_default=True, help="producer rate R, msg/s (0: unlimited)")
@click.option("--consume-rate", default=8_000.0, show_default=True, help="consumer rate C, msg/s (0: unlimited)")
def demo(url: str | None, messages: int, rate: float, consume_rate: float) -> None:
    """A producer and a consumer thread, with live L, R, C and the drain estimate.

    By default R > C, so the backlog L grows while the producer runs, then drains.
    """
    from bridgeq.demo import DemoRun

    with _connected(url) as broker:
        run = DemoRun(broker, messages, publish_rate=rate, consume_rate=consume_rate)
        title = f"bridgeq demo on {broker.url}: {messages:,} messages, topic {run.topic}"
        run.start()
        peak = QueueModel(0, 0.0, 0.0)
        with Live(_model_table(peak, title), console=out, refresh_per_second=8) as live:
            while not run.done.wait(0.25):
                model = run.sample()
                peak = QueueModel(
                    max(peak.depth or 0, model.depth or 0),
                    max(peak.publish_rate or 0, model.publish_rate or 0),
                    max(peak.consume_rate or 0, model.consume_rate or 0),
                )
                live.update(_model_table(model, title, {"consumed": f"{run.consumed:,}"}))
        run.finish()
        elapsed = time.monotonic() - run.started
        out.print(
            f"done: {run.consumed:,} of {messages:,} messages consumed in {elapsed:.2f} s "
            f"({run.consumed / elapsed:,.0f} msg/s end to end); peak L={peak.depth:,}, "
            f"peak R={peak.publish_rate:,.0f}/s, peak C={peak.consume_rate:,.0f}/s"
        )


def _parse_headers(pairs: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--header must be name=value, got {pair!r}")
        headers[name] = value
    return headers


@main.command()
@click.argument("url")
@click.argument("topic")
@click.option("--key", default=None, help="routing key for every message")
@click.option("--header", "header_pairs", multiple=True, help="name=value, repeatable")
@click.option("--file", "source", type=click.File("rb"), default="-", help="input file (default: stdin)")
@click.option("--batch", default=500, show_default=True, help="messages per confirmed batch")
def publish(
    url: str, topic: str, key: str | None, header_pairs: tuple[str, ...], source: IO[bytes], batch: int
) -> None:
    """Publish one message per input line."""
    headers = _parse_headers(header_pairs)
    with _connected(url) as broker:
        sent = 0
        pending: list[bridgeq.Message] = []
        for line in source:
            pending.append(bridgeq.Message(line.rstrip(b"\r\n"), headers=headers, key=key))
            if len(pending) >= batch:
                sent += len(broker.publish_batch(topic, pending))
                pending = []
        sent += len(broker.publish_batch(topic, pending))
    err.print(f"published {sent:,} message(s) to {topic}")


def _as_json(delivery: bridgeq.Delivery) -> str:
    record: dict[str, Any] = {
        "id": delivery.id,
        "topic": delivery.topic,
        "group": delivery.group,
        "key": delivery.key,
        "attempt": delivery.attempt,
        "headers": dict(delivery.headers),
    }
    try:
        record["body"] = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(delivery.body).decode("ascii")
    return json.dumps(record, ensure_ascii=False)


@main.command()
@click.argument("url")
@click.argument("topic")
@click.option("--group", required=True, help="consumer group to read as")
@click.option("--max", "limit", type=int, default=None, help="stop after this many messages")
@click.option("--timeout", type=float, default=None, help="stop when nothing arrived for this many seconds")
@click.option("--no-ack", is_flag=True, help="do not ack: the messages stay with the group")
def consume(url: str, topic: str, group: str, limit: int | None, timeout: float | None, no_ack: bool) -> None:
    """Print messages as JSON lines (body as UTF-8, else body_base64)."""
    with _connected(url) as broker, broker.subscribe(topic, group) as sub:
        count = 0
        while limit is None or count < limit:
            delivery = sub.receive(timeout=timeout)
            if delivery is None:
                break
            click.echo(_as_json(delivery))
            if not no_ack:
                delivery.ack()
            count += 1
    err.print(f"consumed {count:,} message(s) from {topic} as {group}")


@main.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.option("--full", is_flag=True, help="full-size runs (more messages)")
@click.option("-k", "keyword", default=None, help="only cases matching this pytest -k expression")
@click.option("--async", "through_asyncio", is_flag=True, help="run every case through bridgeq.aio as well")
def check(url: str, as_json: bool, full: bool, keyword: str | None, through_asyncio: bool) -> None:
    """Run the conformance suite against URL and print the capability and result matrix."""
    from rich.progress import Progress

    from bridgeq.check import run_check

    styles = "sync,async" if through_asyncio else "sync"
    with _connected(url) as broker:
        capabilities = broker.capabilities
        shown = str(broker.url)
    if as_json:
        report = run_check(url, size="full" if full else "short", keyword=keyword, styles=styles)
    else:
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"checking {shown}", total=None)

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=f"{name[:50] or shown}")

            report = run_check(url, size="full" if full else "short", keyword=keyword, progress=progress, styles=styles)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "url": shown,
                    "capabilities": capabilities.as_dict(),
                    "results": {r.name: {"outcome": r.outcome, "detail": r.detail} for r in report.results.values()},
                    "counts": {o: report.count(o) for o in ("passed", "failed", "unsupported", "skipped")},
                },
                indent=2,
            )
        )
    else:
        caps = Table(title=f"capabilities of {shown}")
        caps.add_column("capability")
        caps.add_column("value", justify="right")
        caps.add_column("meaning")
        for name, value, doc in capabilities.describe():
            caps.add_row(name, str(value), doc)
        out.print(caps)
        results = Table(title="conformance")
        results.add_column("case", no_wrap=True, max_width=64)
        results.add_column("result", no_wrap=True, min_width=11)
        results.add_column("detail", overflow="fold", ratio=1)
        style = {"passed": "green", "failed": "bold red", "unsupported": "yellow", "skipped": "dim"}
        for result in report.results.values():
            results.add_row(result.name, f"[{style[result.outcome]}]{result.outcome}[/]", result.detail)
        out.print(results)
        out.print(
            f"{report.count('passed')} passed, {report.count('failed')} failed, "
            f"{report.count('unsupported')} unsupported, {report.count('skipped')} skipped"
        )
    if not report.ok:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("url")
@click.argument("topic")
@click.option("--group", required=True)
@click.option("--interval", default=2.0, show_default=True, help="seconds between the two samples for R and C")
def stats(url: str, topic: str, group: str, interval: float) -> None:
    """L, R, C and the drain estimate for one group."""
    with _connected(url) as broker:
        sampler = RateSampler()
        first = broker.totals(topic, group)
        rates: tuple[float | None, float | None] = (None, None)
        if first is not None:
            sampler.sample(*first)
            time.sleep(interval)
            second = broker.totals(topic, group)
            if second is not None:
                rates = sampler.sample(*second)
        model = QueueModel(broker.depth(topic, group), *rates)
        out.print(_model_table(model, f"{topic} as {group} on {broker.url}"))


@main.command()
@click.argument("url")
@click.option("--messages", default=50_000, show_default=True, help="messages per run (long enough to time)")
@click.option("--size", default=100, show_default=True, help="body size in bytes")
@click.option("--batch", default=100, show_default=True, help="publish and receive batch size")
@click.option("--json", "as_json", is_flag=True)
@click.option("--async", "through_asyncio", is_flag=True, help="also run through bridgeq.aio and compare")
@click.option("--rounds", default=1, show_default=True, help="alternate runs; the median of each figure is shown")
@click.option("--read-ahead", is_flag=True, help="consume with read_ahead=True (and room for it in prefetch)")
def bench(
    url: str, messages: int, size: int, batch: int, as_json: bool, through_asyncio: bool, rounds: int, read_ahead: bool
) -> None:
    """Measure R (publish), C (consume+ack) and publish->receive latency p50/p99."""
    import asyncio

    from bridgeq import aio
    from bridgeq.bench import BenchPlan, median_result, run_bench, run_bench_async

    plan = BenchPlan(messages, size, batch, read_ahead=read_ahead)

    async def async_run() -> BenchResult:
        async with aio.connect(url) as broker:
            return await run_bench_async(broker, plan)

    runs: dict[str, list[BenchResult]] = {"sync": [], "asyncio": []}
    with err.status(f"benchmarking {url}: {messages:,} messages of {size} B, {rounds} round(s)"):
        for _ in range(rounds):
            with _connected(url) as broker:
                runs["sync"].append(run_bench(broker, plan))
            if through_asyncio:
                runs["asyncio"].append(asyncio.run(async_run()))
    results = {api: median_result(found) for api, found in runs.items() if found}
    if as_json:
        click.echo(json.dumps({api: r.as_dict() for api, r in results.items()}, indent=2))
        return
    reads = ", read ahead" if read_ahead else ""
    table = Table(title=f"bridgeq bench {results['sync'].url}: {messages:,} x {size} B, batch {batch}{reads}")
    for column in ("API", "R publish msg/s", "C consume+ack msg/s", "latency p50 ms", "latency p99 ms"):
        table.add_column(column, justify="right")
    for api, result in results.items():
        table.add_row(
            api,
            f"{result.publish_rate:,.0f}",
            f"{result.consume_rate:,.0f}",
            f"{result.latency_p50_ms:.3f}",
            f"{result.latency_p99_ms:.3f}",
        )
    if through_asyncio:
        sync, other = results["sync"], results["asyncio"]
        table.add_row(
            "asyncio / sync",
            f"{other.publish_rate / sync.publish_rate:.2f}x",
            f"{other.consume_rate / sync.consume_rate:.2f}x",
            f"{other.latency_p50_ms / sync.latency_p50_ms:.2f}x",
            f"{other.latency_p99_ms / sync.latency_p99_ms:.2f}x",
        )
    out.print(table)


@main.command()
@click.argument("source")
@click.argument("destination")
@click.option("--topic", required=True, help="the source topic")
@click.option("--group", default=None, help="read as this group (default: a dedicated migration group)")
@click.option("--to-topic", default=None, help="the destination topic (default: the same name)")
@click.option("--checkpoint", default=None, help="progress file; rerun the same command to resume")
@click.option("--dry-run", is_flag=True, help="move nothing: show what would move and what differs")
@click.option("--verify", is_flag=True, help="afterwards, read the destination back and compare")
@click.option("--follow", is_flag=True, help="keep bridging new messages until Ctrl-C or SIGTERM")
@click.option("--rate", type=float, default=None, help="at most this many messages per second")
@click.option("--batch", default=500, show_default=True, help="messages per confirmed batch")
@click.option("--idle-timeout", default=2.0, show_default=True, help="stop after this long with nothing new")
@click.option(
    "--in-process", is_flag=True, help="read and publish from threads of this process, not child processes (slower)"
)
@click.option("--json", "as_json", is_flag=True)
def migrate(
    source: str,
    destination: str,
    topic: str,
    group: str | None,
    to_topic: str | None,
    checkpoint: str | None,
    dry_run: bool,
    verify: bool,
    follow: bool,
    rate: float | None,
    batch: int,
    idle_timeout: float,
    in_process: bool,
    as_json: bool,
) -> None:
    """Move (or with --follow, mirror) a topic from SOURCE to DESTINATION, losing nothing."""
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bridgeq import migration

    stop = threading.Event()
    bar = Progress(
        TextColumn("[bold]migrating[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10,.0f} msg/s  L={task.fields[waiting]}  eta {task.fields[eta]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json or dry_run,
    )
    task = bar.add_task("moving", total=None, rate=0.0, waiting="?", eta="?")

    def show(status: migration.MigrationStatus) -> None:
        total = status.moved + status.waiting if status.waiting is not None else None
        eta = format_seconds(status.eta_seconds) if status.eta_seconds is not None else "?"
        waiting = "?" if status.waiting is None else f"{status.waiting:,}"
        bar.update(task, completed=status.moved, total=total, rate=status.rate, waiting=waiting, eta=eta)

    with bar, migration.stop_on_signals(stop):
        report = migration.migrate(
            source,
            destination,
            topic,
            group=group,
            to_topic=to_topic,
            checkpoint=checkpoint,
            dry_run=dry_run,
            verify=verify,
            follow=follow,
            rate=rate,
            batch=batch,
            idle_timeout=idle_timeout,
            progress=show,
            stop=stop,
            publisher_process=False if in_process else None,
            source_process=False if in_process else None,
        )
    if as_json:
        click.echo(json.dumps(_report_dict(report), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _report_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(report)
    data["rate"] = report.rate
    data["ok"] = report.ok
    data["capability_diff"] = [{"capability": n, "source": s, "destination": d} for n, s, d in report.capability_diff]
    return data


def _print_report(report: Any) -> None:
    table = Table(title=f"migrate {report.topic} -> {report.to_topic}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("source", report.source)
    table.add_row("destination", report.destination)
    table.add_row("group", report.group)
    if report.dry_run:
        table.add_row("waiting to move (L)", "unknown" if report.waiting is None else f"{report.waiting:,}")
    else:
        table.add_row("moved in all (manifest)", f"{report.moved:,}")
        table.add_row("moved this run", f"{report.moved_this_run:,}")
        table.add_row("rate", f"{report.rate:,.0f} msg/s")
        table.add_row("resumed from checkpoint", "yes" if report.resumed else "no")
        table.add_row("redeliveries skipped (already moved)", f"{report.skipped_duplicates:,}")
        table.add_row("duplicates possible after a crash", f"at most {report.in_flight_window:,} (in-flight window)")
    out.print(table)
    diff = Table(title="capabilities that matter for this move")
    for column in ("capability", "source", "destination"):
        diff.add_column(column)
    for name, here, there in report.capability_diff:
        style = "" if here == there else "yellow"
        diff.add_row(name, str(here), f"[{style}]{there}[/]" if style else str(there))
    out.print(diff)
    for warning in report.warnings:
        _say(f"warning: {warning}")
    if report.verify is not None:
        verified = Table(title="verify: destination against the manifest")
        for column in ("expected", "received", "missing", "extra", "duplicated", "altered", "result"):
            verified.add_column(column, justify="right")
        v = report.verify
        verified.add_row(
            *(f"{n:,}" for n in (v.expected, v.received, v.missing, v.extra, v.duplicated, v.altered)),
            "[green]ok[/]" if v.ok else "[bold red]LOSS OR ALTERATION[/]",
        )
        out.print(verified)


@main.command()
@click.argument("scheme", required=False)
def options(scheme: str | None) -> None:
    """The URL options of one backend (or of every backend), read from their declarations."""
    from bridgeq import registry
    from bridgeq.options import describe

    for name in [scheme] if scheme else registry.schemes():
        backend = registry.load(name.lower().removesuffix("://"))
        table = Table(title=f"{name}:// options ({backend.__module__}.{backend.__name__})")
        for column in ("option", "type", "default", "meaning"):
            table.add_column(column)
        for row in describe(backend.options_type):
            table.add_row(*row)
        out.print(table)


if __name__ == "__main__":
    main()
