"""Faults: a broker restarted mid-stream, connections cut, a producer killed mid-batch, many threads.

Every case holds the backend to at-least-once: nothing whose publish returned is
lost (see :mod:`bridgeq.testing.faults` for how runs are judged). Publishers do
what an application should: resend what was not confirmed, with the same ids.
Consumers get no help: the subscription must ride out the fault by itself.

Gating, so any backend can run these:

- restart: needs ``persistent`` (else UNSUPPORTED) and a restart command in
  ``BRIDGEQ_TEST_RESTART_<BACKEND>`` (REDIS, RABBITMQ, KAFKA, or the target's
  name upper-cased): a command that restarts the broker, keeping its data, and
  returns once it answers again. Without one the case is skipped with that
  reason (it fails instead when ``BRIDGEQ_TEST_REQUIRE`` names the backend).
- connection cut: needs one broker address (host and port, or a built-in
  scheme's default port) to put a TCP proxy in front of; memory:// has none.
- producer killed: needs ``persistent``.
- threads: every backend.

Set ``BRIDGEQ_TEST_FAULT_REPORT`` to a file name to get one JSON line per run
(case, URL, published, confirmed, received, lost, duplicated, ...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import bridgeq
from bridgeq.testing.faults import Reader, Tally, Verdict, check, drain_until, publish_confirmed
from bridgeq.testing.plugin import UNSUPPORTED
from bridgeq.testing.proxy import Proxy, proxied_url, upstream_of
from bridgeq.testing.support import patience
from bridgeq.testing.targets import required
from bridgeq.url import parse

FAMILIES = {"redis": "redis", "rediss": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq", "kafka": "kafka"}
RESTART_TIMEOUT = 180.0


def _backend(target_name: str, url: str) -> str:
    """The backend's name as the env vars spell it: redis, rabbitmq, kafka, or the target's own."""
    scheme = parse(url).scheme
    return FAMILIES.get(scheme) or target_name.rstrip("0123456789") or scheme


def _unsupported_unless(broker: bridgeq.Broker, capability: str) -> None:
    if not getattr(broker.capabilities, capability):
        pytest.skip(f"{UNSUPPORTED}{broker.url.scheme} lacks {capability}")


def _report(case: str, url: str, verdict: Verdict, record_property, **extra: object) -> None:
    row = {"case": case, "url": str(parse(url)), **verdict.row(), **extra, "errors": dict(verdict.errors)}
    record_property("fault_run", json.dumps(row))
    print(f"\n{case} on {row['url']}: {verdict}; {json.dumps(extra)}")
    path = os.environ.get("BRIDGEQ_TEST_FAULT_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def _judge(verdict: Verdict, tally: Tally | None = None) -> None:
    assert not verdict.lost, f"confirmed messages lost: {verdict}"
    assert not verdict.unknown, f"messages received that were never published: {verdict}"
    if tally is not None:
        assert not tally.unexpected, f"errors a fault must not cause: {tally.unexpected[:5]}"


def _publisher(
    broker: bridgeq.Broker, topic: str, tally: Tally, label: str, count: int, batch: int, pause: float, deadline: float
) -> threading.Thread:
    """A thread publishing ``count`` keyed messages in batches, ``pause`` s apart, resending what is unconfirmed."""
    failed: list[str] = []

    def run() -> None:
        for start in range(0, count, batch):
            messages = [
                bridgeq.Message(f"{label}:{i}", key=f"{label}-k{i % 4}")
                for i in range(start, min(count, start + batch))
            ]
            if not publish_confirmed(broker, topic, messages, tally, deadline=deadline, where=label):
                failed.append(f"{label} gave up at message {start}")
                return
            time.sleep(pause)

    thread = threading.Thread(target=run, name=f"bridgeq-fault-{label}", daemon=True)
    thread.failed = failed  # type: ignore[attr-defined]
    thread.start()
    return thread


def _wait_for(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


# -- broker restart ------------------------------------------------------------------------


def _restart_command(bridgeq_target, url: str) -> str:
    backend = _backend(bridgeq_target.name, url)
    names = [f"BRIDGEQ_TEST_RESTART_{backend.upper()}"]
    if bridgeq_target.name.upper() != backend.upper():
        names.append(f"BRIDGEQ_TEST_RESTART_{bridgeq_target.name.upper()}")
    command = next((os.environ[n] for n in names if os.environ.get(n)), None)
    if not command:
        reason = f"set {names[0]} to a command that restarts the broker (data kept) to run the restart case"
        if required(backend):
            pytest.fail(f"{backend}: required by BRIDGEQ_TEST_REQUIRE: {reason}")
        pytest.skip(reason)
    own = os.environ.get(f"BRIDGEQ_TEST_{backend.upper()}_URL")
    if own and upstream_of(own) != upstream_of(url):
        pytest.skip(f"{names[0]} restarts the broker of BRIDGEQ_TEST_{backend.upper()}_URL, not {parse(url)}")
    return command


class _Restarter(threading.Thread):
    """Restarts the broker each time publishing passes one of ``marks`` confirmed messages."""

    def __init__(self, command: str, tally: Tally, marks: list[int], stop: threading.Event) -> None:
        super().__init__(name="bridgeq-fault-restarter", daemon=True)
        self.command, self.tally, self.marks, self.stop = command, tally, marks, stop
        self.runs: list[dict[str, object]] = []

    def run(self) -> None:
        for mark in self.marks:
            _wait_for(lambda m=mark: self.tally.confirmed >= m or self.stop.is_set(), 300)
            if self.tally.confirmed < mark:  # publishing stopped short of the mark
                return
            before = self.tally.confirmed
            started = time.monotonic()
            try:
                done = subprocess.run(self.command, shell=True, capture_output=True, text=True, timeout=RESTART_TIMEOUT)
                code, tail = done.returncode, (done.stderr or done.stdout).strip()[-300:]
            except subprocess.TimeoutExpired:
                code, tail = -1, f"timed out after {RESTART_TIMEOUT:g} s"
            self.runs.append(
                {
                    "code": code,
                    "seconds": round(time.monotonic() - started, 2),
                    "confirmed_before": before,
                    "tail": tail,
                }
            )
            time.sleep(1.0)  # let traffic flow between restarts


def test_broker_restarted_twice_mid_stream_loses_nothing_confirmed(
    broker_url, bridgeq_target, names, size, record_property
):
    total = size.n(10_000, 50_000)
    publishers, batch = 4, 20
    per_publisher = total // publishers
    topic, group = names.topic(), names.group()
    tally = Tally()
    stop = threading.Event()
    with bridgeq.connect(broker_url) as broker:
        _unsupported_unless(broker, "persistent")
        command = _restart_command(bridgeq_target, broker_url)
        broker.declare(topic, group)
        readers = [
            Reader(broker, topic, group, tally, name="reader"),
            Reader(broker, topic, group, tally, name="reader-ahead", read_ahead=True),  # with a fetch in flight
        ]
        for reader in readers:
            reader.start()
        restarter = _Restarter(command, tally, [total // 4, total // 2], stop)
        threads: list[threading.Thread] = []
        try:
            assert all(r.joined.wait(patience()) for r in readers), "readers could not subscribe"
            started = time.monotonic()
            deadline = started + 240
            threads = [
                _publisher(broker, topic, tally, f"p{n}", per_publisher, batch, 0.05, deadline)
                for n in range(publishers)
            ]
            restarter.start()
            for thread in threads:
                thread.join(max(1.0, deadline - time.monotonic()))
            published = time.monotonic() - started
            if any(t.failed for t in threads):
                stop.set()
            restarter.join(RESTART_TIMEOUT * 2)
            drained = drain_until(tally, None, patience() + 60)
        finally:
            stop.set()
            for reader in readers:
                reader.stop()
    verdict = tally.verdict()
    _report(
        "broker restart x2",
        broker_url,
        verdict,
        record_property,
        restarts=[{k: v for k, v in r.items() if k != "tail"} for r in restarter.runs],
        seconds=round(published, 1),
    )
    assert len(restarter.runs) == 2 and all(r["code"] == 0 for r in restarter.runs), restarter.runs
    assert all(int(r["confirmed_before"]) < total for r in restarter.runs), "messages must flow across each restart"
    assert not [f for t in threads for f in t.failed], [f for t in threads for f in t.failed]
    assert verdict.confirmed == total
    assert drained, f"confirmed messages never arrived: {verdict}"
    _judge(verdict, tally)


# -- connection cut ------------------------------------------------------------------------


def test_connection_cut_and_black_holed_loses_nothing_confirmed(broker_url, names, size, record_property):
    upstream = upstream_of(broker_url)
    if upstream is None:
        pytest.skip(f"{UNSUPPORTED}{parse(broker_url).scheme}:// has no single broker address to cut")
    total = size.n(2_000, 10_000)
    topic, group = names.topic(), names.group()
    tally = Tally()
    with Proxy(upstream, kafka=parse(broker_url).scheme == "kafka") as proxy:
        url = proxied_url(broker_url, proxy)
        with bridgeq.connect(url) as broker:
            broker.declare(topic, group)
            reader = Reader(broker, topic, group, tally)
            reader.start()
            faults: list[str] = []
            try:
                assert reader.joined.wait(patience()), "the reader could not subscribe"
                deadline = time.monotonic() + 180
                publisher: Any = _publisher(broker, topic, tally, "p", total, 10, 0.01, deadline)
                for mark, fault in zip((0.2, 0.4, 0.6, 0.8), ("drop", "blackhole", "stall", "drop"), strict=True):
                    _wait_for(lambda m=mark: tally.confirmed >= total * m or not publisher.is_alive(), 120)
                    faults.append(f"{fault}@{tally.confirmed}")
                    if fault == "drop":
                        proxy.drop()
                    else:
                        getattr(proxy, fault)(2.0)
                        assert proxy.wait_healed()
                publisher.join(max(1.0, deadline - time.monotonic()))
                drained = drain_until(tally, None, patience() + 30)
            finally:
                reader.stop()
    verdict = tally.verdict()
    _report("connection cut", broker_url, verdict, record_property, faults=faults, resets=proxy.stats.reset)
    assert not publisher.failed, publisher.failed
    assert verdict.confirmed == total
    assert drained, f"confirmed messages never arrived: {verdict}"
    _judge(verdict, tally)


# -- producer killed -----------------------------------------------------------------------

_DOOMED_PRODUCER = textwrap.dedent(
    """
    import sys, bridgeq
    url, topic, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = sys.stdout
    with bridgeq.connect(url) as broker:
        for n in range(1000):
            batch = [bridgeq.Message(f"{n}:{i}", key=f"k{i % 4}") for i in range(size)]
            out.write(f"+{len(batch)}\\n")
            out.flush()
            ids = broker.publish_batch(topic, batch)
            out.write("".join(f"={mid}\\n" for mid in ids))
            out.flush()
    """
)


def test_producer_killed_mid_batch_every_returned_id_is_on_the_broker(broker_url, names, size, record_property):
    topic, group = names.topic(), names.group()
    batch, wanted = 500, size.n(2_000, 20_000)
    with bridgeq.connect(broker_url) as broker:
        _unsupported_unless(broker, "persistent")
        broker.declare(topic, group)
        child = subprocess.Popen(
            [sys.executable, "-c", _DOOMED_PRODUCER, broker_url, topic, str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        lines: list[bytes] = []
        printed = 0
        killer = threading.Timer(patience() + 60, lambda: child.kill())
        killer.start()
        try:
            for line in child.stdout:
                lines.append(line)
                printed += line.startswith(b"=")
                if printed >= wanted and line.startswith(b"+"):
                    time.sleep(random.uniform(0, 0.005))
                    os.kill(child.pid, signal.SIGKILL)
                    break
            lines.extend(child.stdout.read().splitlines(keepends=True))
        finally:
            killer.cancel()
            child.kill()
            child.wait()
        stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
        assert child.returncode == -signal.SIGKILL, f"the producer ended by itself: {stderr[-500:]}"
        complete = [line.decode().strip() for line in lines if line.endswith(b"\n")]
        confirmed = [line[1:] for line in complete if line.startswith("=")]
        attempted = sum(int(line[1:]) for line in complete if line.startswith("+"))
        mid_batch = bool(complete) and complete[-1].startswith("+")
        received: list[str] = []
        with broker.subscribe(topic, group, prefetch=500, max_deliveries=None) as sub:
            missing = set(confirmed)
            deadline = time.monotonic() + patience()
            while missing and time.monotonic() < deadline:
                got = sub.receive_batch(500, timeout=1.0)
                received += [d.id for d in got]
                missing.difference_update(d.id for d in got)
                sub.ack(got)
            quiet_until = time.monotonic() + 1.0
            while time.monotonic() < quiet_until:
                got = sub.receive_batch(500, timeout=0.2)
                received += [d.id for d in got]
                sub.ack(got)
    verdict = dataclasses.replace(
        check(confirmed, received, published=set(confirmed) | set(received)), published=attempted
    )
    unconfirmed_on_broker = len(set(received) - set(confirmed))
    _report(
        "producer SIGKILL",
        broker_url,
        verdict,
        record_property,
        attempted=attempted,
        mid_batch=mid_batch,
        unconfirmed_on_broker=unconfirmed_on_broker,
    )
    assert len(confirmed) >= wanted
    assert unconfirmed_on_broker <= attempted - len(confirmed)
    _judge(verdict)


# -- threads -------------------------------------------------------------------------------


def test_eight_publisher_and_four_consumer_threads_share_one_broker(broker_url, names, size, record_property):
    per_thread = size.n(250, 2_500)
    topic, group = names.topic(), names.group()
    tally = Tally()
    errors: list[str] = []
    with bridgeq.connect(broker_url) as broker:
        broker.declare(topic, group)
        readers = [Reader(broker, topic, group, tally, name=f"reader{i}", prefetch=50) for i in range(4)]
        for reader in readers:
            reader.start()
        start = threading.Barrier(8)

        def publish(n: int) -> None:
            try:
                start.wait(30)
                for i in range(0, per_thread, 10):
                    messages = [bridgeq.Message(f"{n}:{j}", key=f"t{n}") for j in range(i, min(i + 10, per_thread))]
                    tally.sent(messages)
                    if i % 20:
                        tally.confirm(broker.publish_batch(topic, messages))
                    else:
                        for message in messages:
                            tally.confirm([broker.publish(topic, message.body, key=message.key, id=message.id)])
            except Exception as exc:
                errors.append(f"publisher {n}: {type(exc).__name__}: {exc}")

        try:
            assert all(r.joined.wait(patience()) for r in readers), "readers could not subscribe"
            threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(patience() + 60)
            drained = drain_until(tally, None, patience())
        finally:
            for reader in readers:
                reader.stop()
    verdict = tally.verdict()
    _report("threads 8+4", broker_url, verdict, record_property, per_reader=[r.count for r in readers])
    assert not errors, errors[:5]
    assert verdict.confirmed == 8 * per_thread
    assert drained, f"confirmed messages never arrived: {verdict}"
    _judge(verdict, tally)
    assert not tally.errors, dict(tally.errors)
