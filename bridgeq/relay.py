"""A migration's publishing half: batches go out in order, off the thread that reads the source.

The migration hands each batch to a relay with a sequence number; the relay
publishes the batches in order (all those waiting as one group, so one wait
for the destination's confirmations) and reports :class:`Published` for
each, with its manifest lines if asked, once the destination confirmed it, or
:class:`Failed`. The next group is begun (``Backend.begin_publish``) before
the one ahead of it is awaited, so with a destination that confirms
asynchronously (Kafka) the relay does not sit idle while it confirms.
Consuming and publishing are both CPU-bound Python, so in one process they
share the GIL and the migration runs at about ``1/(1/consume + 1/publish)``:
:class:`ProcessRelay` publishes from a child process, so it can reach the
slower of the two. :class:`ThreadRelay` publishes from a thread, for
``memory://`` (which lives inside one process).

The child process is a :class:`bridgeq.child.Child`; see that module for how it
starts, talks and ends.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import pickle
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, NamedTuple

from bridgeq import api
from bridgeq.child import (
    EXIT_GRACE,
    Child,
    Failed,
    Outcomes,
    Packed,
    Replies,
    describe,
    read_frame,
    records_of,
    run_child,
)
from bridgeq.errors import BridgeqError, ConnectionLost, PublishError
from bridgeq.manifest import fingerprint_lines
from bridgeq.message import EMPTY_HEADERS, Delivery, Message

RETRIES = 5
PUBLISHER_NICE = 10
"""The publisher process's niceness. Reading is a chain of round trips, each of which waits for a free core;
publishing hands batches over and has the in-flight window to catch up in. So the publisher yields the
cores to the reading side (and to the brokers), and gets them whenever the reader waits for the window:
on two cores, Redis -> Kafka moved 5-10% faster, Redis -> RabbitMQ 7%, RabbitMQ -> Redis the same."""


class Published(NamedTuple):
    """The destination confirmed batch ``seq``; with its manifest lines when asked for."""

    seq: int
    lines: str


def begin_with_retry(
    broker: api.Broker, topic: str, messages: list[Message], stop: threading.Event
) -> Callable[[], None]:
    """:meth:`~bridgeq.api.Broker.begin_batch`; the function returned waits for the confirmations,
    retrying what was not confirmed after a transient fault, with backoff."""
    try:
        confirm = broker.begin_batch(topic, messages)
    except (ConnectionLost, PublishError) as exc:
        return functools.partial(_retry, broker, topic, messages, stop, exc)

    def confirmed() -> None:
        try:
            confirm()
        except (ConnectionLost, PublishError) as exc:
            _retry(broker, topic, messages, stop, exc)

    return confirmed


def _retry(
    broker: api.Broker, topic: str, messages: list[Message], stop: threading.Event, failure: BridgeqError
) -> None:
    """Publish again what ``failure`` says was not confirmed, up to RETRIES attempts in all."""
    for attempt in range(1, RETRIES):
        if stop.is_set():
            raise failure
        if isinstance(failure, PublishError) and failure.message_ids:
            unconfirmed = set(failure.message_ids)
            messages = [m for m in messages if m.id in unconfirmed]
        if stop.wait(min(0.2 * 2**attempt, 5.0)):
            raise failure
        try:
            broker.publish_batch(topic, messages)
            return
        except (ConnectionLost, PublishError) as exc:
            failure = exc
    raise failure


class Relay(ABC):
    """Publishes submitted batches in order to ``topic``; outcomes go to ``outcomes``."""

    def __init__(self, topic: str, outcomes: Outcomes) -> None:
        self.topic = topic
        self.outcomes = outcomes

    def start(self) -> None:  # noqa: B027 - a no-op unless there is something to wait for
        """Return once batches can be submitted."""

    @abstractmethod
    def submit(self, seq: int, deliveries: Sequence[Delivery], fingerprint: bool = True) -> None:
        """Publish ``deliveries`` after the batches submitted before; Published(seq) follows,
        with their manifest lines (:func:`~bridgeq.manifest.fingerprint_lines`) if ``fingerprint``."""

    @abstractmethod
    def stop_retrying(self) -> None:
        """Stopping: a batch failing now raises instead of being retried."""

    @abstractmethod
    def close(self) -> None:
        """Stop publishing (batches not yet confirmed may or may not go out). Idempotent."""

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ThreadRelay(Relay):
    """Publishes through ``broker`` from a thread of this process."""

    def __init__(self, broker: api.Broker, topic: str, outcomes: queue.SimpleQueue[Any]) -> None:
        super().__init__(topic, outcomes)
        self._broker = broker
        broker.backend.prepare_publish(topic)  # as a publisher process does before it says it is ready
        self._work: queue.SimpleQueue[tuple[int, Sequence[Delivery], bool] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridgeq-migrate-publisher", daemon=True)
        self._thread.start()

    def submit(self, seq: int, deliveries: Sequence[Delivery], fingerprint: bool = True) -> None:
        self._work.put((seq, deliveries, fingerprint))

    def stop_retrying(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._work.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            for items in _confirmed_groups(self._work, self._begin):
                for seq, deliveries, fingerprint in items:
                    self.outcomes.put(Published(seq, fingerprint_lines(deliveries) if fingerprint else ""))
        except BaseException as exc:
            self.outcomes.put(Failed(exc))

    def _begin(self, items: list[tuple[int, Sequence[Delivery], bool]]) -> Callable[[], None]:
        messages = [d.to_message() for _, deliveries, _ in items for d in deliveries]
        return begin_with_retry(self._broker, self.topic, messages, self._stop)


class ProcessRelay(Child, Relay):
    """Publishes from a child process that connects to ``url`` itself (see :mod:`bridgeq.child`)."""

    def __init__(self, url: str, topic: str, outcomes: queue.SimpleQueue[Any]) -> None:
        Relay.__init__(self, topic, outcomes)
        Child.__init__(self, "bridgeq.relay:child_main", url, (topic,), "publisher process", outcomes)

    def submit(self, seq: int, deliveries: Sequence[Delivery], fingerprint: bool = True) -> None:
        records = deliveries.packed if type(deliveries) is Packed else records_of(deliveries)
        self.send((seq, records, fingerprint))  # a source process's pickle goes on as it came

    def stop_retrying(self) -> None:
        with contextlib.suppress(BridgeqError):
            self.send(None)

    def on_reply(self, reply: tuple[Any, ...]) -> None:
        seq, failure, lines = reply
        if failure is None:
            self.outcomes.put(Published(seq, lines))
        else:
            self.fail(failure)


def child_main() -> None:
    """The publisher process: connect, then publish each batch read from stdin and confirm it on stdout."""
    with contextlib.suppress(AttributeError, OSError):  # where the platform has no nice(), as it is
        os.nice(PUBLISHER_NICE)
    run_child(_connect, _serve)


def _connect(setup: tuple[str, str]) -> tuple[api.Broker, str]:
    url, topic = setup
    broker = api.connect(url)
    try:
        broker.declare(topic)  # as the parent did: the first publish need not look the topic up
        broker.backend.prepare_publish(topic)  # nor start the client: the migration's clock runs from now
    except BaseException:
        broker.close()
        raise
    return broker, topic


def _serve(commands: IO[bytes], replies: Replies, opened: tuple[api.Broker, str]) -> None:
    broker, topic = opened
    with broker:
        _publish_all(commands, replies, broker, topic)


def _publish_all(commands: IO[bytes], replies: Replies, broker: api.Broker, topic: str) -> None:
    work: queue.SimpleQueue[tuple[int, list[Message], str] | None] = queue.SimpleQueue()
    stop = threading.Event()
    threading.Thread(target=_watch, args=(commands, work, stop), name="bridgeq-relay-input", daemon=True).start()

    def begin(items: list[tuple[int, list[Message], str]]) -> Callable[[], None]:
        return begin_with_retry(broker, topic, [m for _, messages, _ in items for m in messages], stop)

    try:
        for items in _confirmed_groups(work, begin):
            for seq, _, lines in items:
                replies.send((seq, None, lines))
    except BaseException as exc:
        replies.send((None, describe(exc), ""))


def _watch(commands: IO[bytes], work: queue.SimpleQueue[Any], stop: threading.Event) -> None:
    """The child's input thread: batches into ``work``, as messages with their fingerprints (computed here,
    while the main thread waits for the destination); at EOF (the parent closed or died) it ends the process."""
    try:
        while (frame := read_frame(commands)) is not None:
            item = pickle.loads(frame)
            if item is None:
                stop.set()
            else:
                seq, records, fingerprint = item
                if type(records) is bytes:  # as a source process packed them
                    records = pickle.loads(records)
                messages = [Message.unchecked(i, b, h or EMPTY_HEADERS, k) for i, b, h, k in records]
                work.put((seq, messages, fingerprint_lines(messages) if fingerprint else ""))
    except BaseException:
        pass
    finally:
        stop.set()
        work.put(None)
        time.sleep(EXIT_GRACE)
        os._exit(0)


def _confirmed_groups(
    work: queue.SimpleQueue[Any], begin: Callable[[list[Any]], Callable[[], None]]
) -> Iterator[list[Any]]:
    """The items of ``work`` (until None) in groups, each once the publish ``begin`` started for it is
    confirmed. A group is all the items waiting when the last was begun (one wait for the destination's
    confirmations instead of one per batch), and it is begun before the group ahead of it is awaited, so
    the destination confirms one while the next goes out."""
    pending: collections.deque[tuple[list[Any], Callable[[], None]]] = collections.deque()
    ended = False
    while pending or not ended:
        items = [] if ended else _waiting(work, block=not pending)
        if items and items[-1] is None:
            ended = True
            items.pop()
        if items:
            pending.append((items, begin(items)))
        if pending and (not items or len(pending) > 1):
            group, confirm = pending.popleft()
            confirm()
            yield group


def _waiting(work: queue.SimpleQueue[Any], block: bool) -> list[Any]:
    """The items in ``work`` (waiting for one if ``block``), up to and with a None."""
    items = []
    with contextlib.suppress(queue.Empty):
        item = work.get(block)
        items.append(item)
        while item is not None:
            item = work.get_nowait()
            items.append(item)
    return items
