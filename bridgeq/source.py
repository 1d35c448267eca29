"""A migration's reading half: batches from the source topic, in order, acked in order when told.

The reader reads the source as a group and hands each batch on as a
:class:`Chunk`; the migration acks batches strictly in the order they came,
once they are safely moved. :class:`ProcessSource` reads from a child process
(:mod:`bridgeq.child`) that subscribes to the source itself, so that the
broker client's decoding does not share a GIL with the migration's own work;
:class:`ThreadSource` reads from a thread, for ``memory://`` (which lives inside
one process) or where no child can start. A child ends with its parent: what
it read and was never told to ack goes back to the source at once.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, cast

from bridgeq import api
from bridgeq.child import Child, Failed, Packed, Replies, describe, read_frame, records_of, redelivered, run_child
from bridgeq.errors import BridgeqError
from bridgeq.manifest import fingerprint_lines
from bridgeq.message import Delivery

IN_FLIGHT_POLL = 0.01
"""How long the reader waits for the source while batches are in flight: the acks made meanwhile go out
with its next fetch, so a broker that stops at the prefetch limit (RabbitMQ) resumes promptly."""
SOURCE_EXIT_WAIT = 30.0
"""How long a source process may take, once told to end, to give back what it holds and leave its group."""
STALL_TIMEOUT = 120.0
"""How long a migration waits for messages the source says are waiting but does not deliver."""


class Chunk(NamedTuple):
    """A batch read from the source (from a source process: packed as it came)."""

    deliveries: Sequence[Delivery]


@dataclass
class Reading:
    """How to read: the subscription's settings and when to stop."""

    topic: str
    group: str
    batch: int
    prefetch: int
    max_bytes: int
    """Bodies read and not yet acked, in bytes: reading pauses at this (and goes on once acks free room)."""
    idle_timeout: float
    follow: bool
    rate: float | None


class Source(ABC):
    """Reads the source into ``events`` (Chunk..., then None; Failed on error) until told to stop."""

    first_read: float | None = None
    """When the first batch came (time.monotonic())."""

    fingerprinting = False
    """Whether batches come with their fingerprints (see :meth:`fingerprint`)."""

    def fingerprint(self, on: bool) -> None:  # noqa: B027 - only a source process can
        """Ask for batches with their fingerprints computed (a source process can: the publisher is behind)."""

    @abstractmethod
    def ack(self, chunks: list[Sequence[Delivery]]) -> None:
        """Ack these batches: the oldest ones not acked yet, in the order they came."""

    @abstractmethod
    def finish(self, unacked: list[Sequence[Delivery]]) -> None:
        """Stop reading; the batches read and not acked (``unacked``; a child knows its own) go back."""


class ThreadSource(Source):
    """Reads through ``broker`` from a thread of this process."""

    def __init__(
        self, broker: api.Broker, reading: Reading, events: queue.SimpleQueue[Any], stop: threading.Event
    ) -> None:
        self._stop = stop
        self._tally = Tally()
        self._sub = subscribe(broker, reading)
        self._thread = threading.Thread(
            target=read,
            args=(broker, self._sub, _Events(events, self), self._tally, reading, stop),
            name="bridgeq-migrate-reader",
            daemon=True,
        )
        self._thread.start()

    def ack(self, chunks: list[Sequence[Delivery]]) -> None:
        _ack(self._sub, self._tally, chunks)

    def finish(self, unacked: list[Sequence[Delivery]]) -> None:
        self._stop.set()
        self._thread.join()
        _give_back(self._sub, unacked)


class ProcessSource(Child, Source):
    """Reads from a child process that subscribes to ``url`` itself (see :mod:`bridgeq.child`)."""

    def __init__(self, url: str, reading: Reading, events: queue.SimpleQueue[Any], stop: threading.Event) -> None:
        self._topic, self._group = reading.topic, reading.group
        self._done = threading.Event()
        Child.__init__(
            self,
            "bridgeq.source:child_main",
            url,
            (reading,),
            "source process",
            _Events(events, self),
            SOURCE_EXIT_WAIT,
        )
        self._stopper = threading.Thread(target=self._stop_when, args=(stop,), daemon=True)
        self._stopper.start()

    def _stop_when(self, stop: threading.Event) -> None:
        while not self._done.is_set():
            if stop.wait(0.1):
                with contextlib.suppress(BridgeqError):
                    self.send(("stop",))
                return

    def ack(self, chunks: list[Sequence[Delivery]]) -> None:
        self.send(("ack", len(chunks)))

    def fingerprint(self, on: bool) -> None:
        if on != self.fingerprinting:
            self.fingerprinting = on
            self.send(("fingerprint", on))

    def finish(self, unacked: list[Sequence[Delivery]]) -> None:
        self._done.set()
        self.close()  # EOF: the child gives back what it holds, unacked, and exits

    def on_reply(self, reply: tuple[Any, ...]) -> None:
        kind, payload = reply
        if kind == "chunk":
            count, packed, lines, redelivered = payload
            self.outcomes.put(Chunk(Packed(count, packed, self._topic, self._group, lines, redelivered)))
        elif kind == "failed":
            self.fail(payload)
        else:
            self.outcomes.put(None)


@dataclass
class Tally:
    """Messages read (written by the reader only) and settled (by the acking side only)."""

    read: int = 0
    settled: int = 0
    read_bytes: int = 0  # of their bodies
    settled_bytes: int = 0
    sizes: deque[int] = field(default_factory=deque)  # bodies' bytes of each batch read and not yet settled


class _Events:
    """The reader's output in this process: into the migration's events, noting when the first batch came."""

    def __init__(self, events: queue.SimpleQueue[Any], source: Source) -> None:
        self._events = events
        self._source = source

    def put(self, event: Any) -> None:
        if type(event) is Chunk and self._source.first_read is None:
            self._source.first_read = time.monotonic()
        self._events.put(event)


def subscribe(broker: api.Broker, reading: Reading) -> api.Subscription:
    """The reader's subscription: redelivered as often as it takes (the migration never dead-letters),
    reading ahead (it reads continuously, and Redis then serves the next batch while this one is packed)."""
    return broker.subscribe(
        reading.topic, reading.group, prefetch=reading.prefetch, max_deliveries=None, read_ahead=True
    )


def read(broker: api.Broker, sub: Any, events: Any, tally: Tally, reading: Reading, stop: threading.Event) -> None:
    """The reader: batches from the source into ``events``, then None (Failed first, on error).

    The subscription's prefetch bounds what is read and not yet settled (the
    in-flight window). Done means nothing came for ``idle_timeout``, nothing is
    in flight, and the source says nothing waits (messages held by a crashed
    member come back once the broker notices), or nothing came for STALL_TIMEOUT
    although the source says some wait.
    """
    batch, idle_timeout, follow, rate = reading.batch, reading.idle_timeout, reading.follow, reading.rate
    started = quiet_since = time.monotonic()
    try:
        while not stop.is_set():
            in_flight = tally.read > tally.settled  # then poll: each fetch sends the acks made meanwhile
            if in_flight and tally.read_bytes - tally.settled_bytes >= reading.max_bytes:
                stop.wait(IN_FLIGHT_POLL)  # large messages: wait for acks to free room
                quiet_since = time.monotonic()
                continue
            chunk = sub.receive_batch(batch, timeout=IN_FLIGHT_POLL if in_flight else 0.5 if follow else idle_timeout)
            if not chunk:
                if follow:
                    continue
                if in_flight:  # the depth counts them: not the source's silence
                    quiet_since = time.monotonic()
                    continue
                left = quiet_depth(broker, reading.topic, reading.group)
                if not left or time.monotonic() - quiet_since > STALL_TIMEOUT:
                    break
                continue
            quiet_since = time.monotonic()
            tally.read += len(chunk)
            size = sum(map(len, [d.body for d in chunk]))
            tally.sizes.append(size)
            tally.read_bytes += size
            events.put(Chunk(chunk))
            if rate:
                pace(started, tally.read, rate, stop)
    except BaseException as exc:
        events.put(Failed(exc))
    finally:
        events.put(None)


def _ack(sub: Any, tally: Tally, chunks: Sequence[Sequence[Delivery]]) -> None:
    deliveries = [d for chunk in chunks for d in chunk]
    sub.ack(deliveries)
    tally.settled += len(deliveries)
    tally.settled_bytes += sum([tally.sizes.popleft() for _ in chunks])  # batches are settled in the order read


def _give_back(sub: Any, unacked: Sequence[Sequence[Delivery]]) -> None:
    """Nack what was read and never acked (back to the source now, not after the broker's timeout); close."""
    try:
        deliveries = [d for chunk in unacked for d in chunk]
        if deliveries:
            with contextlib.suppress(BridgeqError):
                sub.nack(deliveries)
    finally:
        sub.close()


def quiet_depth(broker: api.Broker, topic: str, group: str) -> int | None:
    try:
        return broker.depth(topic, group)
    except BridgeqError:
        return None


def pace(started: float, done: int, rate: float, stop: threading.Event) -> None:
    ahead = started + done / rate - time.monotonic()
    if ahead > 0:
        stop.wait(ahead)


# -- the child ---------------------------------------------------------------------------------


def child_main() -> None:
    """The source process: subscribe, then read batches to stdout and ack them as stdin says."""
    run_child(_subscribe, _serve)


def _subscribe(setup: tuple[str, Reading]) -> tuple[api.Broker, Any, Reading]:
    url, reading = setup
    broker = api.connect(url)
    try:
        sub = subscribe(broker, reading)
    except BaseException:
        broker.close()
        raise
    return broker, sub, reading


class _Replies:
    """The reader's output in the child: each batch is kept (to ack by count) and sent to the parent."""

    def __init__(self, replies: Replies, held: deque[list[Delivery]], lock: threading.Lock) -> None:
        self._replies, self._held, self._lock = replies, held, lock
        self.fingerprinting = False  # set by the parent: the publisher is behind, so fingerprint here

    def put(self, event: Any) -> None:
        if type(event) is Chunk:
            chunk = cast(list[Delivery], event.deliveries)  # as the subscription returned it
            with self._lock:
                self._held.append(chunk)
            packed = pickle.dumps(records_of(chunk), pickle.HIGHEST_PROTOCOL)
            lines = fingerprint_lines(chunk) if self.fingerprinting else ""
            self._replies.send(("chunk", (len(chunk), packed, lines, redelivered(chunk))))
        elif type(event) is Failed:
            self._replies.send(("failed", describe(event.error)))
        else:
            self._replies.send(("end", None))


def _serve(commands: IO[bytes], replies: Replies, opened: tuple[api.Broker, Any, Reading]) -> None:
    broker, sub, reading = opened
    held: deque[list[Delivery]] = deque()  # read and not yet acked, in order
    lock = threading.Lock()
    tally, stop = Tally(), threading.Event()
    output = _Replies(replies, held, lock)
    acks = threading.Thread(
        target=_ack_as_told, args=(commands, replies, sub, held, lock, tally, stop, output), name="bridgeq-source-acks"
    )
    acks.start()
    try:
        read(broker, sub, output, tally, reading, stop)
        acks.join()  # until the parent closes our stdin
    finally:
        stop.set()
        with lock:
            unacked = list(held)
        with contextlib.suppress(BaseException):
            _give_back(sub, unacked)
            broker.close()


def _ack_as_told(
    commands: IO[bytes],
    replies: Replies,
    sub: Any,
    held: deque[list[Delivery]],
    lock: threading.Lock,
    tally: Tally,
    stop: threading.Event,
    output: _Replies,
) -> None:
    """The child's input thread: ("ack", n) acks the n oldest batches; ("fingerprint", on) says whether
    to fingerprint batches; ("stop",) ends reading; EOF, everything."""
    try:
        while (frame := read_frame(commands)) is not None:
            command = pickle.loads(frame)
            if command[0] == "stop":
                stop.set()
                continue
            if command[0] == "fingerprint":
                output.fingerprinting = command[1]
                continue
            with lock:
                chunks = [held.popleft() for _ in range(command[1])]
            _ack(sub, tally, chunks)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            replies.send(("failed", describe(exc)))
    finally:
        stop.set()
