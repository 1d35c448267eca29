"""Move or mirror a topic from one broker to another, with nothing lost.

The source is read as a group (:mod:`bridgeq.source`); each batch goes to a
relay (:mod:`bridgeq.relay`) that publishes it to the destination. By default
each side runs in a child process of its own, so that reading, publishing and
the bookkeeping here do not share one GIL. Once the
destination confirmed a batch it is recorded in the manifest (fsynced) and only
then acked on the source: at-least-once. A few batches are in flight at once
(``WINDOW``); after a crash the same call resumes: what the manifest already
holds is acked without being sent again, so duplicates are bounded by the
in-flight window. ``verify`` reads the destination with its own group and
compares it with the manifest.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from bridgeq import api
from bridgeq.child import ChildStartError, Failed, Packed, redelivered
from bridgeq.errors import ConfigError
from bridgeq.manifest import Manifest, fingerprint_lines
from bridgeq.message import Delivery
from bridgeq.names import check_name
from bridgeq.relay import ProcessRelay, Published, Relay, ThreadRelay
from bridgeq.source import Chunk, ProcessSource, Reading, Source, ThreadSource, quiet_depth
from bridgeq.url import resolve
from bridgeq.verify import VERIFY_GROUP, VerifyReport, verify_destination

DEFAULT_GROUP = "bridgeq-migrate"
WINDOW = 8
"""The in-flight window, in batches: at most ``WINDOW * batch`` messages are handed to the relay and not yet
recorded, the only ones a crash can duplicate (read and not yet handed over, they are delivered again once)."""
READ_AHEAD = 32
"""Batches read and not yet acked (the source subscription's prefetch): more than WINDOW, so a broker that
counts what sits in socket buffers against its prefetch (RabbitMQ) keeps delivering while acks travel, and
the reader goes on through a pause of the destination's (a JVM collection: tens of milliseconds). They are
held in memory twice (by the reader and here), and bounded in bytes too: see READ_AHEAD_BYTES."""
READ_AHEAD_BYTES = 256 << 20
"""Bodies read and not yet acked, at most (plus the batch being read, and on Redis the one read ahead): with
large messages, READ_AHEAD batches would be too much to hold. RabbitMQ pushes up to the prefetch (READ_AHEAD
batches) regardless: lower ``batch``."""
RELAY_BEHIND = 2
"""With more batches than this read and waiting for room in the window, the relay is the slower side:
fingerprints are then computed on the reading side. (Batches unconfirmed say nothing: a destination
that confirms asynchronously always has a few.)"""
DEPTH_EVERY = 0.5
"""Seconds between the source depth queries behind progress reports."""

Progress = Callable[["MigrationStatus"], None]


@dataclass
class MigrationStatus:
    """What a running migration reports as it goes (for progress bars)."""

    moved: int = 0
    skipped_duplicates: int = 0
    waiting: int | None = None
    rate: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def eta_seconds(self) -> float | None:
        if self.waiting is None or self.rate <= 0:
            return None
        return self.waiting / self.rate


@dataclass
class MigrationReport:
    """What one call of :func:`migrate` did."""

    source: str
    destination: str
    topic: str
    to_topic: str
    group: str
    moved: int = 0
    moved_this_run: int = 0
    skipped_duplicates: int = 0
    seconds: float = 0.0
    """From the first message read to the last batch moved: joining the source and the idle wait
    at the end are not counted, so ``rate`` is the pace while moving."""
    resumed: bool = False
    in_flight_window: int = 0
    dry_run: bool = False
    waiting: int | None = None
    left_waiting: int | None = None
    capability_diff: list[tuple[str, Any, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None

    @property
    def rate(self) -> float:
        return self.moved_this_run / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.verify is None or self.verify.ok


COMPARED = ("ordered_per_key", "max_message_size", "replay", "exact_delivery_count", "persistent", "crash_redelivery")


def migrate(
    source: str,
    destination: str,
    topic: str,
    *,
    group: str | None = None,
    to_topic: str | None = None,
    checkpoint: str | None = None,
    dry_run: bool = False,
    verify: bool = False,
    follow: bool = False,
    rate: float | None = None,
    batch: int = 500,
    idle_timeout: float = 2.0,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    publisher_process: bool | None = None,
    source_process: bool | None = None,
) -> MigrationReport:
    """Move ``topic`` from ``source`` to ``destination`` (as ``to_topic``); see the module doc.

    Without ``follow`` it stops once nothing arrived for ``idle_timeout`` seconds;
    with it, when ``stop`` is set (Ctrl-C / SIGTERM in the CLI), after the batches
    in flight are confirmed and acked. At most ``WINDOW`` batches of ``batch`` are
    in flight: the bound on duplicates after a crash (``in_flight_window``); up to
    ``READ_AHEAD`` batches, and ``READ_AHEAD_BYTES`` of bodies, are read ahead of
    the acks, which bounds memory (a RabbitMQ source pushes up to READ_AHEAD
    batches whatever their size: for large messages, lower ``batch``).

    ``publisher_process``: publish from a child process that connects to
    ``destination`` itself (True), or from a thread of this one (False). The
    default (None) uses a process unless the destination is ``memory://``, which
    cannot be reached from another process, and falls back to a thread, with a
    warning, where no child Python can be started. The child's errors are raised
    here as the same bridgeq errors; it ends with this call, or with this process.
    ``source_process`` does the same for reading the source (``memory://`` is read
    from a thread).
    """
    to_topic = to_topic or topic
    group = group or DEFAULT_GROUP
    for kind, name in (("topic", topic), ("destination topic", to_topic), ("group", group)):
        check_name(kind, name)
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    target = resolve(destination)
    if publisher_process and target.scheme == "memory":
        raise ConfigError("memory:// lives inside one process: it cannot be published to from a child process")
    origin = resolve(source)
    if source_process and origin.scheme == "memory":
        raise ConfigError("memory:// lives inside one process: it cannot be read from a child process")
    report = MigrationReport(str(origin), str(target), topic, to_topic, group, dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(api.connect(source))
        dst = stack.enter_context(api.connect(destination))
        report.capability_diff = [
            (name, getattr(src.capabilities, name), getattr(dst.capabilities, name)) for name in COMPARED
        ]
        report.warnings = _warnings(src, dst, verify)
        src.declare(topic, group)
        report.waiting = src.depth(topic, group)
        if dry_run:
            return report
        events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        child = None
        if publisher_process is not False and target.scheme != "memory":
            # the publisher process starts while we declare
            child = _spawn(_raw_url(destination), to_topic, events, publisher_process is None, report)
            if child is not None:
                stack.enter_context(child)
        dst.declare(to_topic, VERIFY_GROUP if verify else None)
        relay = _started(child, dst, to_topic, events, publisher_process is None, report)
        stack.enter_context(relay)
        identity = {"source": report.source, "destination": report.destination, "topic": topic, "to": to_topic}
        manifest = Manifest(checkpoint, identity | {"group": group})
        try:
            report.resumed = manifest.resumed
            stop = stop or threading.Event()
            reading = Reading(topic, group, batch, READ_AHEAD * batch, READ_AHEAD_BYTES, idle_timeout, follow, rate)
            reader = _reader(src, source, reading, events, stop, source_process, report)
            _move(src, reader, relay, events, manifest, report, batch, progress, stop)
        finally:
            manifest.close()
        report.moved = len(manifest.entries)
        if verify:
            report.verify = verify_destination(dst, to_topic, manifest, idle_timeout)
    return report


def _raw_url(url: Any) -> str:
    """The URL as given, password included: for a child process, through its pipe."""
    return url if isinstance(url, str) else resolve(url).render(hide_password=False)


def _spawn(
    url: str, topic: str, events: queue.SimpleQueue[_Event], fallback: bool, report: MigrationReport
) -> ProcessRelay | None:
    """The publisher process, starting; None (with a warning) where it cannot start and a thread will do."""
    try:
        return ProcessRelay(url, topic, events)
    except ChildStartError as exc:
        if not fallback:
            raise
        report.warnings.append(f"publishing from this process: {exc}")
        return None


def _reader(
    src: api.Broker,
    url: str,
    reading: Reading,
    events: queue.SimpleQueue[_Event],
    stop: threading.Event,
    process: bool | None,
    report: MigrationReport,
) -> Source:
    """The source's reader: a child process unless asked otherwise (or memory://), else a thread; a child
    that cannot start falls back to a thread, with a warning, unless the child was asked for."""
    if process is not False and src.url.scheme != "memory":
        try:
            child = ProcessSource(_raw_url(url), reading, events, stop)
            child.start()
            return child
        except ChildStartError as exc:
            if process:
                raise
            report.warnings.append(f"reading in this process: {exc}")
    return ThreadSource(src, reading, events, stop)


def _started(
    child: ProcessRelay | None,
    dst: api.Broker,
    topic: str,
    events: queue.SimpleQueue[_Event],
    fallback: bool,
    report: MigrationReport,
) -> Relay:
    """``child`` once it is connected, or a thread relay when there is none (or it could not start)."""
    if child is not None:
        try:
            child.start()
            return child
        except ChildStartError as exc:
            if not fallback:
                raise
            report.warnings.append(f"publishing from this process: {exc}")
    return ThreadRelay(dst, topic, events)


def _warnings(src: api.Broker, dst: api.Broker, verify: bool) -> list[str]:
    said = []
    if not src.capabilities.replay:
        said.append("the source has no replay: a new migration group sees only what is published after it exists")
    if not dst.capabilities.replay:
        said.append(
            "the destination has no replay: declare its consumer groups before migrating, "
            "or the moved messages reach no one"
        )
    if dst.capabilities.max_message_size < src.capabilities.max_message_size:
        said.append(
            f"the destination accepts at most {dst.capabilities.max_message_size} bytes per message, "
            f"the source {src.capabilities.max_message_size}: larger waiting messages stop the migration"
        )
    if src.capabilities.ordered_per_key and not dst.capabilities.ordered_per_key:
        said.append("per-key order is not kept by the destination")
    return said


_Event: TypeAlias = "Chunk | Published | Failed | None"
"""What the main thread waits for: a batch read, one confirmed or failed, or None: the reader is done."""


@dataclass
class _Flight:
    """A batch read and not yet acked; ``fresh`` is what had to be published (not already in the manifest),
    ``lines`` their manifest lines."""

    chunk: Sequence[Delivery]
    fresh: Sequence[Delivery]
    confirmed: bool
    lines: str = ""


def _move(
    src: api.Broker,
    source: Source,
    relay: Relay,
    events: queue.SimpleQueue[_Event],
    manifest: Manifest,
    report: MigrationReport,
    batch: int,
    progress: Progress | None,
    stop: threading.Event,
) -> None:
    """Relay what is read, and settle in order: record what was confirmed (one fsync), then ack it on the source."""
    status = MigrationStatus(moved=len(manifest.entries))
    flagged = src.capabilities.exact_delivery_count  # a delivery's attempt 1 means no run of ours had it
    moved_before = status.moved
    window = WINDOW * batch
    report.in_flight_window = manifest.progress.in_flight_window = window
    started = last_moved = depth_at = time.monotonic()
    flights: deque[_Flight] = deque()  # read and not yet acked, in order
    held: deque[_Flight] = deque()  # of those, the ones waiting for room in the window
    unconfirmed: dict[int, _Flight] = {}
    sequence = itertools.count()
    relayed = 0  # messages handed to the relay and not yet recorded: at most the window
    reading = True
    failure: BaseException | None = None
    try:
        while reading or flights:
            for event in _drain(events):
                if type(event) is Chunk:
                    chunk = event.deliveries
                    fresh = _fresh(manifest, chunk, flagged)
                    flight = _Flight(chunk, fresh, not fresh)
                    flights.append(flight)
                    if fresh:
                        held.append(flight)
                elif type(event) is Published:
                    flight = unconfirmed.pop(event.seq)
                    flight.confirmed = True
                    if event.lines:
                        flight.lines = event.lines
                elif type(event) is Failed:
                    failure = failure or event.error
                else:
                    reading = False
                    if stop.is_set():
                        relay.stop_retrying()
            if failure is not None:
                raise failure
            settled: list[_Flight] = []
            while flights and flights[0].confirmed:
                settled.append(flights.popleft())
            if settled:
                _record(manifest, settled)
                relayed -= sum(len(f.fresh) for f in settled)
            while held and (not relayed or relayed + len(held[0].fresh) <= window):
                flight = held.popleft()
                seq = next(sequence)
                unconfirmed[seq] = flight
                relayed += len(flight.fresh)
                behind = len(held) > RELAY_BEHIND  # the publishing side is the slower one
                fresh = flight.fresh
                if type(fresh) is Packed:  # so the source process fingerprints (unpacking here would cost more)
                    source.fingerprint(behind)
                    flight.lines = fresh.lines
                elif behind:  # so fingerprint here, while it publishes
                    flight.lines = fingerprint_lines(fresh)
                relay.submit(seq, fresh, fingerprint=not flight.lines)
            if not settled:
                continue
            source.ack([flight.chunk for flight in settled])
            status.skipped_duplicates += sum(len(f.chunk) - len(f.fresh) for f in settled)
            status.moved = manifest.moved
            last_moved = time.monotonic()
            elapsed = last_moved - (source.first_read or started)
            status.rate = (status.moved - moved_before) / elapsed if elapsed else 0.0
            if progress is not None:
                if status.waiting is None or last_moved - depth_at >= DEPTH_EVERY:
                    status.waiting, depth_at = quiet_depth(src, report.topic, report.group), last_moved
                progress(status)
    finally:
        stop.set()
        relay.close()
        unacked = [flight.chunk for flight in flights]
        unacked += [event.deliveries for event in _drain(events, block=False) if type(event) is Chunk]
        source.finish(unacked)  # what was read and never acked goes back now, not after the broker's timeout
    report.left_waiting = quiet_depth(src, report.topic, report.group)
    if report.left_waiting:
        report.warnings.append(f"{report.left_waiting} message(s) still wait in the source: run again to move them")
    report.moved_this_run = len(manifest.entries) - moved_before
    report.skipped_duplicates = status.skipped_duplicates
    report.seconds = (last_moved if moved_before != status.moved else time.monotonic()) - (source.first_read or started)
    manifest.progress.skipped_duplicates += status.skipped_duplicates
    manifest.save()


def _record(manifest: Manifest, settled: list[_Flight]) -> None:
    """File what was confirmed, with its fingerprints: one durable write for all."""
    published = [f for f in settled if f.fresh]
    if not published:
        return
    lines = published[0].lines if len(published) == 1 else "".join([f.lines for f in published])
    manifest.add(lines, sum(len(f.fresh) for f in published), batches=len(settled))


def _fresh(manifest: Manifest, chunk: Sequence[Delivery], flagged: bool) -> Sequence[Delivery]:
    """What of ``chunk`` is still to publish: all of it unless the manifest has some of its ids already
    (a batch from a source process then stays packed, to go on to the publisher as it came). With a
    source whose attempt counts are exact (``flagged``), a batch of first deliveries is all fresh:
    only redeliveries can have been moved before, so only their batches are looked up."""
    if flagged and not (chunk.redelivered if type(chunk) is Packed else redelivered(chunk)):
        return chunk
    if type(chunk) is Packed:
        unseen = manifest.unseen(chunk.deliveries)
        return chunk if len(unseen) == len(chunk) else unseen
    return manifest.unseen(chunk)


def _drain(events: queue.SimpleQueue[_Event], block: bool = True) -> list[_Event]:
    """The next event (waiting for it unless ``block`` is false) and every one already there."""
    taken: list[_Event] = [events.get()] if block else []
    with contextlib.suppress(queue.Empty):
        while True:
            taken.append(events.get_nowait())
    return taken


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM (the batch in flight still completes)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
