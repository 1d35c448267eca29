"""A migration's publishing half: batches go out in order, off the thread that reads the source.

The migration hands each batch to a relay with a sequence number; the relay
publishes the batches in order (all those waiting in one ``publish_batch``,
so one wait for the destination's confirmations) and reports
:class:`Published` for each, with its fingerprints if asked, once the
destination confirmed it, or :class:`Failed`. Consuming and publishing are
both CPU-bound Python, so in one process they share the GIL and the migration
runs at about ``1/(1/consume + 1/publish)``: :class:`ProcessRelay` publishes
from a child process, so it can reach the slower of the two. :class:`ThreadRelay`
publishes from a thread, for ``memory://`` (which lives inside one process).

The child is a fresh interpreter (``python -c``), not a multiprocessing spawn,
which would import the caller's ``__main__`` again: a plain script calling
``bridgeq.migrate()`` would run twice. The raw destination URL reaches it
through its stdin, never argv or a log. Frames are an 8-byte length and a
pickle, both ways. The child ignores SIGINT and SIGTERM (the parent stops it
once the batches in flight are settled) and exits when its stdin closes, so
it dies with its parent, SIGKILL included.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import IO, Any, NamedTuple

from bridgeq import api, errors
from bridgeq.errors import BridgeqError, ConnectionLost, PublishError
from bridgeq.manifest import fingerprint_lines
from bridgeq.message import EMPTY_HEADERS, Delivery, Message
from bridgeq.url import REDACTED, resolve

RETRIES = 5
READY_TIMEOUT = 120.0
"""How long the child may take to start and connect to the destination."""
EXIT_GRACE = 2.0
"""How long the child may finish a batch once its stdin closed; then it exits regardless."""
PIPE_SIZE = 1 << 20
"""The pipe buffer asked for (Linux): a window of batches fits, so the parent does not wait on writes."""

_LENGTH = struct.Struct(">Q")
_READY = -1  # the child's first frame: (-1, None) once connected, or (-1, failure)
_BOOT_FAILED = -2  # the child could not even import bridgeq

_BOOT = """\
import os, pickle, struct, sys
try:
    sys.path[:] = pickle.loads(sys.stdin.buffer.read(struct.unpack(">Q", sys.stdin.buffer.read(8))[0]))
    from bridgeq.relay import child_main
except BaseException as exc:
    reply = pickle.dumps((-2, (type(exc).__name__, str(exc), ())))
    try:
        os.write(1, struct.pack(">Q", len(reply)) + reply)
    finally:
        os._exit(3)
child_main()
"""

Failure = tuple[str, str, tuple[str, ...]]
"""An error crossing the pipe: type name, message, PublishError's message ids."""
Record = tuple[str, bytes, "dict[str, str] | None", "str | None"]
"""A message crossing the pipe: id, body, headers (None when empty), key."""


class Published(NamedTuple):
    """The destination confirmed batch ``seq``; with its fingerprints and manifest lines when asked for."""

    seq: int
    digests: list[str]
    lines: str


class Failed(NamedTuple):
    """Publishing (or reading) failed for good; the migration raises ``error``."""

    error: BaseException


class RelayStartError(BridgeqError):
    """The publisher process could not start (no usable Python interpreter, bridgeq not importable)."""


def publish_with_retry(broker: api.Broker, topic: str, messages: list[Message], stop: threading.Event) -> None:
    """Publish, retrying transient faults with backoff (only what was not confirmed); permanent ones raise."""
    for attempt in range(1, RETRIES + 1):
        try:
            broker.publish_batch(topic, messages)
            return
        except (ConnectionLost, PublishError) as exc:
            if attempt == RETRIES or stop.is_set():
                raise
            if isinstance(exc, PublishError) and exc.message_ids:
                unconfirmed = set(exc.message_ids)
                messages = [m for m in messages if m.id in unconfirmed]
            if stop.wait(min(0.2 * 2**attempt, 5.0)):
                raise


class Relay(ABC):
    """Publishes submitted batches in order to ``topic``; outcomes go to ``outcomes``."""

    def __init__(self, topic: str, outcomes: queue.SimpleQueue[Any]) -> None:
        self.topic = topic
        self.outcomes = outcomes

    def start(self) -> None:  # noqa: B027 - a no-op unless there is something to wait for
        """Return once batches can be submitted."""

    @abstractmethod
    def submit(self, seq: int, deliveries: Sequence[Delivery], fingerprint: bool = True) -> None:
        """Publish ``deliveries`` after the batches submitted before; Published(seq) follows,
        with their fingerprints (:func:`~bridgeq.manifest.fingerprint_lines`) if ``fingerprint``."""

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
        for items in _groups(self._work):
            try:
                messages = [d.to_message() for _, deliveries, _ in items for d in deliveries]
                publish_with_retry(self._broker, self.topic, messages, self._stop)
                for seq, deliveries, fingerprint in items:
                    self.outcomes.put(Published(seq, *(fingerprint_lines(deliveries) if fingerprint else ([], ""))))
            except BaseException as exc:
                self.outcomes.put(Failed(exc))
                return


class ProcessRelay(Relay):
    """Publishes from a child process that connects to ``url`` itself (see the module doc)."""

    def __init__(self, url: str, topic: str, outcomes: queue.SimpleQueue[Any]) -> None:
        super().__init__(topic, outcomes)
        self._secret = resolve(url).password  # only to scrub it from the child's error messages
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closing = self._failed = False
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
        except (OSError, ValueError) as exc:
            raise RelayStartError(f"cannot run the publisher process ({sys.executable!r}): {exc}") from exc
        assert self._process.stdin is not None and self._process.stdout is not None
        self._input, self._output = self._process.stdin, self._process.stdout
        self._fd = self._input.fileno()
        _widen(self._fd)
        self._reader = threading.Thread(target=self._read, name="bridgeq-migrate-confirmations", daemon=True)
        self._reader.start()
        try:
            self._send(list(sys.path))
            self._send((url, topic))
        except BridgeqError:
            pass  # the reader reports why the child ended

    def start(self) -> None:
        if not self._ready.wait(READY_TIMEOUT):
            self.close()
            raise RelayStartError(f"the publisher process did not start within {READY_TIMEOUT:.0f} s")
        if self._startup_error is not None:
            self.close()
            raise self._startup_error

    def submit(self, seq: int, deliveries: Sequence[Delivery], fingerprint: bool = True) -> None:
        records = [(d.id, d.body, dict(d.headers) if d.headers else None, d.key) for d in deliveries]
        self._send((seq, records, fingerprint))

    def stop_retrying(self) -> None:
        with contextlib.suppress(BridgeqError):
            self._send(None)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError, ValueError):
            self._input.close()  # EOF: the child finishes (or drops) its batch and exits
        try:
            self._process.wait(timeout=EXIT_GRACE + 3)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            self._output.close()

    def _send(self, item: object) -> None:
        """One frame, in one write (one system call, so one wait for the GIL after it) where the pipe has room."""
        data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        frame = memoryview(_LENGTH.pack(len(data)) + data)
        try:
            while frame:
                frame = frame[os.write(self._fd, frame) :]
        except (OSError, ValueError) as exc:
            raise BridgeqError(f"the publisher process ended unexpectedly ({self._exit_status()})") from exc

    def _read(self) -> None:
        """The confirmations thread: the child's frames become outcomes until it ends."""
        try:
            while (frame := _read_frame(self._output)) is not None:
                seq, failure, *confirmed = pickle.loads(frame)
                if seq in (_READY, _BOOT_FAILED):
                    if failure is not None:
                        self._startup_error = self._error(failure, seq == _BOOT_FAILED)
                    self._ready.set()
                elif failure is None:
                    self.outcomes.put(Published(seq, *confirmed))
                else:
                    self._failed = True
                    self.outcomes.put(Failed(self._error(failure)))
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            pass
        finally:
            if not self._ready.is_set():
                self._startup_error = RelayStartError(f"the publisher process ended at start ({self._exit_status()})")
                self._ready.set()
            elif not (self._closing or self._failed):
                ended = BridgeqError(f"the publisher process ended unexpectedly ({self._exit_status()})")
                self.outcomes.put(Failed(ended))

    def _exit_status(self) -> str:
        try:
            code = self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _error(self, failure: Failure, boot: bool = False) -> BridgeqError:
        """The child's error as the same bridgeq error here, with the password scrubbed from its text."""
        name, text, ids = failure
        if self._secret and len(self._secret) > 2:
            text = text.replace(self._secret, REDACTED)
        if boot:
            return RelayStartError(f"the publisher process could not start: {name}: {text}")
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, PublishError):
            return kind(text, tuple(ids))
        if isinstance(kind, type) and issubclass(kind, BridgeqError):
            return kind(text)
        return BridgeqError(f"the publisher process failed: {name}: {text}")


def child_main() -> None:
    """The publisher process: connect, then publish each batch read from stdin and confirm it on stdout."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop
    try:
        commands = sys.stdin.buffer
        replies = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)  # a stray print goes to stderr, not into the replies
        frame = _read_frame(commands)
        if frame is None:
            return
        url, topic = pickle.loads(frame)
        try:
            broker = api.connect(url)
            broker.declare(topic)  # as the parent did: the first publish need not look the topic up
        except BaseException as exc:
            _write_frame(replies, (_READY, _describe(exc)))
            return
        with broker:
            _write_frame(replies, (_READY, None))
            _serve(commands, replies, broker, topic)
    except BaseException:
        pass  # the parent has gone (broken pipe) or the parent learnt the error already
    finally:
        os._exit(0)


def _serve(commands: IO[bytes], replies: IO[bytes], broker: api.Broker, topic: str) -> None:
    work: queue.SimpleQueue[tuple[int, list[Message], list[str], str] | None] = queue.SimpleQueue()
    stop = threading.Event()
    threading.Thread(target=_watch, args=(commands, work, stop), name="bridgeq-relay-input", daemon=True).start()
    for items in _groups(work):
        try:
            publish_with_retry(broker, topic, [m for _, messages, _, _ in items for m in messages], stop)
        except BaseException as exc:
            _write_frame(replies, (items[0][0], _describe(exc)))
            return
        for seq, _, digests, lines in items:
            _write_frame(replies, (seq, None, digests, lines))


def _watch(commands: IO[bytes], work: queue.SimpleQueue[Any], stop: threading.Event) -> None:
    """The child's input thread: batches into ``work``, as messages with their fingerprints (computed here,
    while the main thread waits for the destination); at EOF (the parent closed or died) it ends the process."""
    try:
        while (frame := _read_frame(commands)) is not None:
            item = pickle.loads(frame)
            if item is None:
                stop.set()
            else:
                seq, records, fingerprint = item
                messages = [_message(*record) for record in records]
                work.put((seq, messages, *(fingerprint_lines(messages) if fingerprint else ([], ""))))
    except BaseException:
        pass
    finally:
        stop.set()
        work.put(None)
        time.sleep(EXIT_GRACE)
        os._exit(0)


def _groups(work: queue.SimpleQueue[Any]) -> Iterator[list[Any]]:
    """The batches in ``work``, in order, each time all those already waiting (one publish_batch
    for all: one wait for the destination's confirmations instead of one per batch), until None."""
    while (item := work.get()) is not None:
        items = [item]
        with contextlib.suppress(queue.Empty):
            while (item := work.get_nowait()) is not None:
                items.append(item)
        yield items
        if item is None:
            return


def _message(message_id: str, body: bytes, headers: dict[str, str] | None, key: str | None) -> Message:
    """A message as the source delivered it (checked there already, so not again)."""
    message = Message.__new__(Message)
    message.id = message_id
    message.body = body
    message.headers = headers or EMPTY_HEADERS
    message.key = key
    return message


def _describe(exc: BaseException) -> Failure:
    return type(exc).__name__, str(exc), tuple(getattr(exc, "message_ids", ()))


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame's payload, or None at EOF."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(stream: IO[bytes], item: object) -> None:
    data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _widen(fd: int) -> None:
    """Ask for a PIPE_SIZE buffer (Linux only; elsewhere, or when refused, the default stays)."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
