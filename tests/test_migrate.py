"""Migration: every ordered pair of brokers, resume after SIGKILL, verify, dry run, the publisher process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis

import bridgeq
from bridgeq import migration, relay, source
from bridgeq.migration import DEFAULT_GROUP, VERIFY_GROUP, MigrationReport, migrate
from bridgeq.relay import PUBLISHER_NICE
from bridgeq.testing.support import collect
from bridgeq.testing.targets import with_options
from tests.migrate_support import REAL, cleanup, fill, fresh_topic, url_of

PAIRS = [(a, b) for a in REAL for b in REAL if a != b] + [("memory", b) for b in REAL]
COUNT = 10_000


@pytest.mark.parametrize(("source", "destination"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_moves_every_message_unchanged(source, destination, tmp_path):
    src_url = "memory://mig-src" if source == "memory" else url_of(source)
    dst_url = url_of(destination)
    topic, to_topic = fresh_topic(), fresh_topic()
    try:
        sent = fill(src_url, topic, COUNT)
        report = migrate(src_url, dst_url, topic, to_topic=to_topic, verify=True, checkpoint=str(tmp_path / "ck"))
        assert report.moved == COUNT
        assert report.verify is not None
        assert (report.verify.missing, report.verify.altered, report.verify.extra) == (0, 0, 0), report.verify
        assert report.verify.received == COUNT
        assert len(sent) == COUNT
    finally:
        cleanup(src_url, topic)
        cleanup(dst_url, to_topic)


def test_memory_round_trip_keeps_ids_bodies_keys_and_headers():
    topic = fresh_topic()
    sent = fill("memory://a", topic, 500)
    with bridgeq.connect("memory://b") as dst:
        dst.declare(topic, "app")
        migrate("memory://a", "memory://b", topic, idle_timeout=0.3)
        with dst.subscribe(topic, "app") as sub:
            got = collect(sub, 500, wait=2)
    assert {d.id: (d.body, d.key, dict(d.headers)) for d in got} == sent


def test_reading_pauses_once_the_bodies_held_reach_the_byte_budget(monkeypatch):
    """Large messages: the reader holds at most READ_AHEAD_BYTES of bodies (and the batch it reads
    then), not READ_AHEAD batches, while the destination lags; everything still moves."""
    held: list[int] = []

    class Watched(source.Tally):
        def __setattr__(self, name: str, value: int) -> None:
            super().__setattr__(name, value)
            if name == "read_bytes":
                held.append(value - getattr(self, "settled_bytes", 0))

    begin = relay.begin_with_retry

    def slow_begin(*args):
        time.sleep(0.01)  # a destination slower than the source: the reader gets ahead
        return begin(*args)

    monkeypatch.setattr(source, "Tally", Watched)
    monkeypatch.setattr(relay, "begin_with_retry", slow_begin)
    monkeypatch.setattr(migration, "READ_AHEAD_BYTES", 20_000)
    topic = fresh_topic()
    with bridgeq.connect("memory://big-src") as src:
        src.declare(topic, DEFAULT_GROUP)
        src.publish_batch(topic, [bridgeq.Message(b"x" * 1000) for _ in range(400)])
        report = migrate("memory://big-src", "memory://big-dst", topic, batch=10, idle_timeout=0.3)
    assert report.moved == 400
    assert 20_000 <= max(held) < 20_000 + 10 * 1000  # it did reach the budget, and went one batch past at most


def test_altered_and_missing_messages_are_counted(tmp_path):
    topic = fresh_topic()
    fill("memory://alt-src", topic, 50)
    with bridgeq.connect("memory://alt-dst") as dst:
        dst.declare(topic, VERIFY_GROUP)
        real_publish = dst.backend.publish
    report = migrate("memory://alt-src", "memory://alt-dst", topic, idle_timeout=0.3, checkpoint=str(tmp_path / "c"))
    assert report.moved == 50
    # Tamper with the destination: drain what arrived, put back one altered and drop one.
    with bridgeq.connect("memory://alt-dst") as dst, dst.subscribe(topic, VERIFY_GROUP) as sub:
        got = collect(sub, 50, wait=2)
        kept = [d.to_message() for d in got[2:]]
        altered = got[0].to_message()
        altered.body = b"tampered"
        dst.publish_batch(topic, [altered, *kept])
    from bridgeq.manifest import Manifest
    from bridgeq.migration import verify_destination

    manifest = Manifest(str(tmp_path / "c"), json.loads((tmp_path / "c").read_text())["identity"])
    with bridgeq.connect("memory://alt-dst") as dst:
        verdict = verify_destination(dst, topic, manifest, idle_timeout=0.3)
    manifest.close()
    assert (verdict.missing, verdict.altered, verdict.extra, verdict.duplicated) == (1, 1, 0, 0)
    assert not verdict.ok
    assert real_publish is not None


def test_a_checkpoint_of_another_migration_is_refused(tmp_path):
    checkpoint = str(tmp_path / "ck")
    fill("memory://c1", "one", 1)
    migrate("memory://c1", "memory://c2", "one", checkpoint=checkpoint, idle_timeout=0.2)
    with pytest.raises(bridgeq.ConfigError, match="belongs to another migration"):
        migrate("memory://c1", "memory://c2", "two", checkpoint=checkpoint, idle_timeout=0.2)


def test_dry_run_moves_nothing_and_compares_capabilities():
    topic = fresh_topic()
    fill("memory://dry", topic, 20)
    report = migrate("memory://dry", "memory://dry-dst", topic, dry_run=True)
    assert report.waiting == 20
    assert report.moved == 0
    assert {name for name, _, _ in report.capability_diff} >= {"ordered_per_key", "max_message_size", "replay"}
    with bridgeq.connect("memory://dry") as src:
        assert src.depth(topic, "bridgeq-migrate") == 20


def test_bad_names_are_refused_before_connecting():
    with pytest.raises(bridgeq.ConfigError):
        migrate("memory://", "memory://", "bad name")


@pytest.mark.parametrize("source", REAL)
def test_sigkill_mid_way_then_resume_loses_nothing(source, tmp_path):
    """Kill the CLI mid-migration, rerun the same command: verify finds nothing missing."""
    src_url = url_of(source)
    dst_url = url_of("redis" if source != "redis" else "kafka")
    topic, to_topic = fresh_topic(), fresh_topic()
    checkpoint = tmp_path / "ck.json"
    command = [
        sys.executable,
        "-m",
        "bridgeq.cli",
        "migrate",
        src_url,
        dst_url,
        "--topic",
        topic,
        "--to-topic",
        to_topic,
        "--checkpoint",
        str(checkpoint),
        "--batch",
        "200",
        "--rate",
        "4000",
        "--verify",
        "--json",
    ]
    try:
        fill(src_url, topic, COUNT)
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if checkpoint.exists() and json.loads(checkpoint.read_text() or "{}").get("moved", 0) >= COUNT // 4:
                break
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        moved_before = json.loads(checkpoint.read_text())["moved"]
        assert 0 < moved_before < COUNT, "the kill must land mid-way"
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        report = json.loads(second.stdout)
        verdict = report["verify"]
        assert report["resumed"] is True
        assert (verdict["missing"], verdict["altered"], verdict["extra"]) == (0, 0, 0)
        assert verdict["duplicated"] <= report["in_flight_window"]
        assert report["moved"] == COUNT
    finally:
        cleanup(src_url, topic)
        cleanup(dst_url, to_topic)


# -- the publisher process (bridgeq.relay) -----------------------------------------------


def test_a_child_publishing_error_is_the_same_bridgeq_error(tmp_path):
    """The destination refuses a message in the child: the caller gets MessageTooLarge, message intact."""
    dst_url = with_options(url_of("redis"), max_message_size=1000)
    topic = fresh_topic()
    with bridgeq.connect("memory://too-big") as src:
        src.declare(topic, DEFAULT_GROUP)
        src.publish(topic, b"x" * 2000, id="big-one")
    try:
        with pytest.raises(bridgeq.MessageTooLarge, match=r"'big-one' is \d+ bytes; redis:// accepts at most 1000"):
            migrate("memory://too-big", dst_url, topic, idle_timeout=0.3, checkpoint=str(tmp_path / "ck"))
        with bridgeq.connect("memory://too-big") as src:
            assert src.depth(topic, DEFAULT_GROUP) == 1, "not acked: it waits in the source"
    finally:
        cleanup(dst_url, topic)


def test_the_cli_prints_a_child_error_as_one_line(tmp_path):
    src_url = url_of("redis")
    dst_url = with_options(url_of("redis"), max_message_size=1000)
    topic, to_topic = fresh_topic(), fresh_topic()
    try:
        with bridgeq.connect(src_url) as src:
            src.declare(topic, DEFAULT_GROUP)
            src.publish(topic, b"x" * 2000)
        command = [sys.executable, "-m", "bridgeq.cli", "migrate", src_url, dst_url, "--topic", topic]
        command += ["--to-topic", to_topic, "--idle-timeout", "0.3", "--json"]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bridgeq: error: message "), done.stderr
        assert "Traceback" not in done.stderr
    finally:
        cleanup(src_url, topic)
        cleanup(dst_url, to_topic)


@pytest.fixture
def redis_move() -> Iterator[tuple[str, str, str]]:
    """The test Redis, a source topic and a destination topic on it (both deleted afterwards)."""
    url, topic, to_topic = url_of("redis"), fresh_topic(), fresh_topic()
    yield url, topic, to_topic
    cleanup(url, topic)
    cleanup(url, to_topic)


def test_redelivered_messages_already_moved_are_skipped_first_deliveries_are_not_looked_up(redis_move, tmp_path):
    """Redis counts deliveries exactly: a message it delivers again after a run moved it is acked without
    being sent again; a batch of first deliveries is not looked up in the manifest (none of ours had it)."""
    url, topic, to_topic = redis_move
    fill(url, topic, 300)
    checkpoint = str(tmp_path / "ck.json")

    def run() -> MigrationReport:
        return migrate(url, url, topic, to_topic=to_topic, checkpoint=checkpoint, batch=100, idle_timeout=0.5)

    assert run().moved_this_run == 300
    with bridgeq.connect(url) as broker:
        key, to_key = broker.backend.key(topic), broker.backend.key(to_topic)
    raw = redis.Redis.from_url(url.partition("?")[0])
    try:
        raw.xgroup_setid(key, DEFAULT_GROUP, "0")  # the group's whole backlog again
        with (
            bridgeq.connect(url) as broker,
            broker.subscribe(topic, DEFAULT_GROUP, prefetch=300, max_deliveries=None) as sub,
        ):
            taken = collect(sub, 300, ack=False)
            sub.nack(taken)  # handed back: the migration claims them as second deliveries
        assert len(taken) == 300
        again = run()
        assert (again.moved_this_run, again.skipped_duplicates) == (0, 300)
        assert raw.xlen(to_key) == 300
        raw.xgroup_setid(key, DEFAULT_GROUP, "0")  # now as first deliveries (attempt 1)
        third = run()
        assert (third.moved_this_run, third.skipped_duplicates) == (0, 0)
        assert raw.xlen(to_key) == 600  # sent again: duplicates on the id, as at-least-once allows
    finally:
        raw.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_processes_die_with_their_parent(redis_move):
    """SIGKILL the migrating CLI: its source and publisher processes must not outlive it."""
    url, topic, to_topic = redis_move
    command = [sys.executable, "-m", "bridgeq.cli", "migrate", url, url, "--topic", topic]
    command += ["--to-topic", to_topic, "--follow", "--json"]
    fill(url, topic, 10)
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while time.monotonic() < deadline and len(children) < 2:
            children = _children(parent.pid)
            time.sleep(0.05)
        assert len(children) == 2, f"the CLI started {len(children)} child process(es), not a source and a publisher"
        publisher = [pid for pid in children if b"bridgeq.relay" in _command_line(pid)]
        assert len(publisher) == 1
        while time.monotonic() < deadline and _nice(publisher[0]) != min(19, os.nice(0) + PUBLISHER_NICE):
            time.sleep(0.05)
        assert _nice(publisher[0]) == min(19, os.nice(0) + PUBLISHER_NICE), (
            "the publisher yields the cores to the reader"
        )
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(pid) for pid in children):
            time.sleep(0.05)
        assert not any(_running(pid) for pid in children), "a child process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _command_line(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as line:
        return line.read()


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_without_a_usable_python_it_publishes_from_a_thread(tmp_path, monkeypatch):
    dst_url = url_of("redis")
    topic = fresh_topic()
    fill("memory://no-child", topic, 300)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    try:
        report = migrate("memory://no-child", dst_url, topic, idle_timeout=0.3, verify=True)
        assert report.moved == 300 and report.verify is not None and report.verify.ok
        assert any("publishing from this process" in warning for warning in report.warnings)
        with pytest.raises(bridgeq.BridgeqError, match="publisher process"):
            migrate("memory://no-child", dst_url, topic, idle_timeout=0.3, publisher_process=True)
    finally:
        cleanup(dst_url, topic)


def test_without_a_usable_python_a_redis_source_is_read_from_a_thread(redis_move, tmp_path, monkeypatch):
    url, topic, to_topic = redis_move
    fill(url, topic, 300)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    report = migrate(url, url, topic, to_topic=to_topic, idle_timeout=0.3, verify=True)
    assert report.moved == 300 and report.verify is not None and report.verify.ok
    assert any("reading in this process" in warning for warning in report.warnings)
    with pytest.raises(bridgeq.BridgeqError, match="source process"):
        migrate(url, url, topic, to_topic=to_topic, idle_timeout=0.3, source_process=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_source_process_that_dies_stops_the_migration_and_loses_nothing(redis_move, tmp_path):
    url, topic, to_topic = redis_move
    fill(url, topic, 200)
    checkpoint = str(tmp_path / "ck")
    outcome: list[BaseException | MigrationReport] = []

    def run() -> None:
        try:
            outcome.append(migrate(url, url, topic, to_topic=to_topic, checkpoint=checkpoint, follow=True))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    manifest, deadline = tmp_path / "ck.manifest", time.monotonic() + 60
    while time.monotonic() < deadline and not (manifest.exists() and manifest.stat().st_size):
        time.sleep(0.05)  # moving: the source process is past its start (dying at start, a thread takes over)
    found = [pid for pid in _children(os.getpid()) if b"bridgeq.source:child_main" in _cmdline(pid)]
    assert found, "no source process started"
    os.kill(found[0], signal.SIGKILL)
    worker.join(timeout=60)
    assert not worker.is_alive()
    [error] = outcome
    assert isinstance(error, bridgeq.BridgeqError) and "source process ended unexpectedly" in str(error)
    report = migrate(url, url, topic, to_topic=to_topic, checkpoint=checkpoint, idle_timeout=0.5)
    verified = migrate(url, url, topic, to_topic=to_topic, checkpoint=checkpoint, verify=True)
    assert report.moved == 200 and verified.verify is not None and verified.verify.missing == 0


def _children(pid: int) -> list[int]:
    """The child processes of every thread of ``pid``."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/children") as listed:
            found += [int(child) for child in listed.read().split()]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except FileNotFoundError:
        return b""


def test_a_memory_source_cannot_be_read_by_a_child_process():
    with pytest.raises(bridgeq.ConfigError, match="memory://"):
        migrate("memory://", "memory://other", "t", source_process=True)


@pytest.mark.parametrize("source", ["memory", "redis"])
def test_publishing_in_process_when_asked(source, tmp_path):
    src_url = "memory://in-process" if source == "memory" else url_of("redis")
    dst_url = url_of("rabbitmq")
    topic, to_topic = fresh_topic(), fresh_topic()
    try:
        fill(src_url, topic, 2000)
        report = migrate(src_url, dst_url, topic, to_topic=to_topic, verify=True, publisher_process=False)
        assert report.moved == 2000 and report.verify is not None
        assert (report.verify.missing, report.verify.altered, report.verify.extra) == (0, 0, 0)
    finally:
        cleanup(src_url, topic)
        cleanup(dst_url, to_topic)


def test_a_memory_destination_cannot_take_a_child_process():
    with pytest.raises(bridgeq.ConfigError, match="memory://"):
        migrate("memory://", "memory://", "t", publisher_process=True)


def test_a_child_error_never_shows_the_password():
    from bridgeq.relay import ProcessRelay

    relay = ProcessRelay.__new__(ProcessRelay)
    relay._secret, relay.what = "s3cret-pw", "publisher process"
    error = relay.error(("ConnectionLost", "cannot reach amqp://user:s3cret-pw@host: refused", ()))
    assert isinstance(error, bridgeq.ConnectionLost)
    assert "s3cret-pw" not in str(error) and "user:***@host" in str(error)
    other = relay.error(("KeyError", "s3cret-pw", ()))
    assert type(other) is bridgeq.BridgeqError and "s3cret-pw" not in str(other)
