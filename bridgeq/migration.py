"""Move or mirror a topic from one broker to another, with nothing lost.

The source is read as a group; each batch is published to the destination and
confirmed, recorded in the manifest (fsynced with a checkpoint), and only then
acked on the source: at-least-once. A reader thread keeps the next batch coming
while the current one is published. After a crash the same call resumes: what
the manifest already holds is acked without being sent again, so duplicates are
bounded by the one batch that was in flight. ``verify`` reads the destination
with its own group and compares it with the manifest.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bridgeq import api
from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost, PublishError
from bridgeq.manifest import Manifest, fingerprint_of
from bridgeq.message import Delivery
from bridgeq.names import check_name
from bridgeq.url import resolve

DEFAULT_GROUP = "bridgeq-migrate"
VERIFY_GROUP = "bridgeq-verify"
RETRIES = 5
STALL_TIMEOUT = 120.0
"""How long a migration waits for messages the source says are waiting but does not deliver."""

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
class VerifyReport:
    """The destination compared with the manifest."""

    expected: int
    received: int
    missing: int
    extra: int
    duplicated: int
    altered: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.altered == 0


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
    """From the start to the last batch moved (the idle wait at the end is not counted)."""
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
) -> MigrationReport:
    """Move ``topic`` from ``source`` to ``destination`` (as ``to_topic``); see the module doc.

    Without ``follow`` it stops once nothing arrived for ``idle_timeout`` seconds;
    with it, when ``stop`` is set (Ctrl-C / SIGTERM in the CLI), after the batch
    in flight is confirmed and acked.
    """
    to_topic = to_topic or topic
    group = group or DEFAULT_GROUP
    for kind, name in (("topic", topic), ("destination topic", to_topic), ("group", group)):
        check_name(kind, name)
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    report = MigrationReport(str(resolve(source)), str(resolve(destination)), topic, to_topic, group, dry_run=dry_run)
    with api.connect(source) as src, api.connect(destination) as dst:
        report.capability_diff = [
            (name, getattr(src.capabilities, name), getattr(dst.capabilities, name)) for name in COMPARED
        ]
        report.warnings = _warnings(src, dst, verify)
        src.declare(topic, group)
        report.waiting = src.depth(topic, group)
        if dry_run:
            return report
        dst.declare(to_topic, VERIFY_GROUP if verify else None)
        identity = {"source": report.source, "destination": report.destination, "topic": topic, "to": to_topic}
        manifest = Manifest(checkpoint, identity | {"group": group})
        try:
            report.resumed = manifest.resumed
            _move(src, dst, manifest, report, batch, idle_timeout, follow, rate, progress, stop or threading.Event())
        finally:
            manifest.close()
        report.moved = len(manifest.entries)
        if verify:
            report.verify = verify_destination(dst, to_topic, manifest, idle_timeout)
    return report


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


def _move(
    src: api.Broker,
    dst: api.Broker,
    manifest: Manifest,
    report: MigrationReport,
    batch: int,
    idle_timeout: float,
    follow: bool,
    rate: float | None,
    progress: Progress | None,
    stop: threading.Event,
) -> None:
    status = MigrationStatus(moved=len(manifest.entries))
    started = last_moved = time.monotonic()
    moved_before = status.moved
    with src.subscribe(report.topic, report.group, prefetch=batch * 2, max_deliveries=None) as sub:
        report.in_flight_window = manifest.progress.in_flight_window = batch * 2
        batches: queue.Queue[list[Delivery] | None] = queue.Queue(maxsize=2)
        reader = threading.Thread(
            target=_read,
            args=(
                sub,
                batches,
                batch,
                idle_timeout,
                follow,
                stop,
                lambda: _quiet_depth(src, report.topic, report.group),
            ),
            name="bridgeq-migrate-reader",
        )
        reader.start()
        try:
            while (chunk := batches.get()) is not None:
                fresh = [d for d in chunk if not manifest.seen(d)]
                if fresh:
                    _publish_with_retry(dst, report.to_topic, fresh, stop)
                    manifest.record(fresh)
                status.skipped_duplicates += len(chunk) - len(fresh)
                sub.ack(chunk)
                status.moved = len(manifest.entries)
                last_moved = time.monotonic()
                elapsed = last_moved - started
                status.rate = (status.moved - moved_before) / elapsed if elapsed else 0.0
                if progress is not None:
                    status.waiting = _quiet_depth(src, report.topic, report.group)
                    progress(status)
                if rate:
                    _pace(started, status.moved - moved_before, rate)
        except BaseException:
            stop.set()
            raise
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting to hand over a batch
                with contextlib.suppress(queue.Empty):
                    leftover = batches.get(timeout=0.1)
                    if leftover:
                        sub.nack(leftover)
            reader.join()
    report.left_waiting = _quiet_depth(src, report.topic, report.group)
    if report.left_waiting:
        report.warnings.append(f"{report.left_waiting} message(s) still wait in the source: run again to move them")
    report.moved_this_run = status.moved - moved_before
    report.skipped_duplicates = status.skipped_duplicates
    report.seconds = (last_moved if moved_before != status.moved else time.monotonic()) - started
    manifest.progress.skipped_duplicates += status.skipped_duplicates
    manifest.save()


def _read(
    sub: Any,
    batches: queue.Queue[list[Delivery] | None],
    batch: int,
    idle_timeout: float,
    follow: bool,
    stop: threading.Event,
    waiting: Callable[[], int | None],
) -> None:
    """The reader thread: batches from the source into the queue, None when done.

    Done means nothing came for ``idle_timeout`` and the source says nothing waits
    (messages held by a crashed member come back once the broker notices), or
    nothing came for STALL_TIMEOUT although the source says some wait.
    """
    quiet_since = time.monotonic()
    try:
        while not stop.is_set():
            chunk = sub.receive_batch(batch, timeout=0.5 if follow else idle_timeout)
            if not chunk:
                if follow:
                    continue
                left = waiting()
                if not left or time.monotonic() - quiet_since > STALL_TIMEOUT:
                    break
                continue
            quiet_since = time.monotonic()
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    batches.put(chunk, timeout=0.1)
                    break
            else:
                sub.nack(chunk)
    finally:
        with contextlib.suppress(queue.Full):
            batches.put(None, timeout=5)


def _publish_with_retry(dst: api.Broker, topic: str, deliveries: list[Delivery], stop: threading.Event) -> None:
    """Publish, retrying transient faults with backoff; permanent ones raise at once."""
    messages = [d.to_message() for d in deliveries]
    for attempt in range(1, RETRIES + 1):
        try:
            dst.publish_batch(topic, messages)
            return
        except (ConnectionLost, PublishError):
            if attempt == RETRIES or stop.is_set():
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0))


def _quiet_depth(broker: api.Broker, topic: str, group: str) -> int | None:
    try:
        return broker.depth(topic, group)
    except BridgeqError:
        return None


def _pace(started: float, done: int, rate: float) -> None:
    ahead = started + done / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)


def verify_destination(dst: api.Broker, topic: str, manifest: Manifest, idle_timeout: float) -> VerifyReport:
    """Read ``topic`` as the verification group and compare with the manifest."""
    expected = manifest.entries
    counts: Counter[str] = Counter()
    altered = 0
    with dst.subscribe(topic, VERIFY_GROUP, prefetch=1000, max_deliveries=None) as sub:
        deadline_idle = idle_timeout
        while True:
            chunk = sub.receive_batch(1000, timeout=deadline_idle)
            if not chunk:
                if set(counts) >= set(expected):
                    break
                if deadline_idle >= idle_timeout * 4:
                    break
                deadline_idle *= 2  # still missing some: give the broker a little longer
                continue
            for delivery in chunk:
                counts[delivery.id] += 1
                known = expected.get(delivery.id)
                if known is not None and counts[delivery.id] == 1 and fingerprint_of(delivery) != known:
                    altered += 1
            sub.ack(chunk)
    received = sum(counts.values())
    return VerifyReport(
        expected=len(expected),
        received=received,
        missing=sum(1 for message_id in expected if message_id not in counts),
        extra=sum(1 for message_id in counts if message_id not in expected),
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
        altered=altered,
    )


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
