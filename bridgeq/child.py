"""A migration's helper processes: each a fresh interpreter, talking to its parent over stdin and stdout.

A child is started with ``python -c`` (not a multiprocessing spawn, which would
import the caller's ``__main__`` again: a plain script calling
``bridgeq.migrate()`` would run twice) and names its entry point on argv. The raw
broker URL reaches it through its stdin, never argv or a log. Frames are an
8-byte length and a pickle, both ways. A child ignores SIGINT and SIGTERM (the
parent stops it once the batches in flight are settled) and ends when its stdin
closes, so it dies with its parent, SIGKILL included. Its first reply says it
is ready, or why it is not; its errors come back as the same bridgeq errors,
the password scrubbed from their text.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, NamedTuple, Protocol, TypeVar, overload

from bridgeq import errors
from bridgeq.errors import BridgeqError, PublishError
from bridgeq.message import EMPTY_HEADERS, Delivery
from bridgeq.url import REDACTED, resolve

READY_TIMEOUT = 120.0
"""How long a child may take to start and connect to its broker."""
EXIT_GRACE = 2.0
"""How long a child may finish its work once its stdin closed; then it exits regardless."""
PIPE_SIZE = 1 << 20
"""The pipe buffer asked for (Linux): a window of batches fits, so neither side waits on writes."""
CHILD_GC_THRESHOLDS = (50_000, 20, 100)
"""A child makes a few short-lived objects per message, none in cycles to speak of: collecting the young
generation every 50,000 allocations instead of Python's 700 saves it about 0.5 us per message."""

LENGTH = struct.Struct(">Q")
READY = -1  # a child's first reply: (READY, None) once connected, or (READY, failure)
BOOT_FAILED = -2  # the child could not even import bridgeq

_BOOT = """\
import importlib, os, pickle, struct, sys
try:
    sys.path[:] = pickle.loads(sys.stdin.buffer.read(struct.unpack(">Q", sys.stdin.buffer.read(8))[0]))
    module, _, function = sys.argv[1].partition(":")
    entry = getattr(importlib.import_module(module), function)
except BaseException as exc:
    reply = pickle.dumps((-2, (type(exc).__name__, str(exc), ())))
    try:
        os.write(1, struct.pack(">Q", len(reply)) + reply)
    finally:
        os._exit(3)
entry()
"""

Failure = tuple[str, str, tuple[str, ...]]
"""An error crossing the pipe: type name, message, PublishError's message ids."""
Record = tuple[str, bytes, "dict[str, str] | None", "str | None"]
"""A message crossing the pipe: id, body, headers (None when empty), key."""


def records_of(deliveries: Iterable[Delivery]) -> list[Record]:
    return [(d.id, d.body, dict(d.headers) if d.headers else None, d.key) for d in deliveries]


def redelivered(deliveries: Iterable[Delivery]) -> bool:
    """Whether some of ``deliveries`` were delivered before (to this group)."""
    return any(d.attempt > 1 for d in deliveries)


class Packed(Sequence[Delivery]):
    """A batch as a source process sent it: the records still pickled. A publisher process
    takes the pickle as it is; the deliveries are unpickled here only if something asks for them."""

    def __init__(
        self, size: int, packed: bytes, topic: str, group: str, lines: str = "", redelivered: bool = True
    ) -> None:
        self.size, self.packed = size, packed
        self.lines = lines  # the manifest lines, when the source process computed them
        self.redelivered = redelivered  # some of it was delivered before: attempts above 1
        self._topic, self._group = topic, group
        self._deliveries: list[Delivery] | None = None

    @property
    def deliveries(self) -> list[Delivery]:
        """The batch's deliveries (their ``attempt`` is not known here: 1; see ``redelivered``)."""
        if self._deliveries is None:
            topic, group = self._topic, self._group
            records: list[Record] = pickle.loads(self.packed)
            self._deliveries = [Delivery(i, b, h or EMPTY_HEADERS, k, topic, group, 1) for i, b, h, k in records]
        return self._deliveries

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> Delivery: ...
    @overload
    def __getitem__(self, index: slice) -> list[Delivery]: ...
    def __getitem__(self, index: int | slice) -> Delivery | list[Delivery]:
        return self.deliveries[index]


T = TypeVar("T")


class Outcomes(Protocol):
    """Where a child's news goes (the migration's event queue)."""

    def put(self, item: Any) -> None: ...


class Failed(NamedTuple):
    """Publishing or reading failed for good; the migration raises ``error``."""

    error: BaseException


class ChildStartError(BridgeqError):
    """A helper process could not start (no usable Python interpreter, bridgeq not importable)."""


class Child:
    """The parent's end of one helper process: start, handshake, frames out, replies in, stop.

    ``on_reply`` gets every reply after the handshake, on the replies thread; a
    failure it reports, or the child's ending without being asked to, goes to
    ``outcomes`` as :class:`Failed`.
    """

    def __init__(
        self,
        entry: str,
        url: str,
        setup: tuple[Any, ...],
        what: str,
        outcomes: Outcomes,
        exit_wait: float = EXIT_GRACE + 3,
    ) -> None:
        self.what = what
        self.outcomes = outcomes
        self._exit_wait = exit_wait  # how long close() waits for it to finish before killing it
        self._secret = resolve(url).password  # only to scrub it from the child's error messages
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closing = False
        self._sending = threading.Lock()  # whole frames, from any thread
        self.failed = False  # a failure was reported: the child's end is no news
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, entry], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
        except (OSError, ValueError) as exc:
            raise ChildStartError(f"cannot run the {what} ({sys.executable!r}): {exc}") from exc
        assert self._process.stdin is not None and self._process.stdout is not None
        self._input, self._output = self._process.stdin, self._process.stdout
        self._fd = self._input.fileno()
        widen(self._fd)
        widen(self._output.fileno())
        self._replies = threading.Thread(target=self._read, name=f"bridgeq-{what.replace(' ', '-')}", daemon=True)
        self._replies.start()
        try:
            self.send(list(sys.path))
            self.send((url, *setup))
        except BridgeqError:
            pass  # the replies thread reports why the child ended

    def on_reply(self, reply: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def fail(self, failure: Failure) -> None:
        """Report the failure the child sent (its end is then no news)."""
        self.failed = True
        self.outcomes.put(Failed(self.error(failure)))

    def start(self) -> None:
        """Return once the child is connected; raise (and stop it) if it is not."""
        if not self._ready.wait(READY_TIMEOUT):
            self.close()
            raise ChildStartError(f"the {self.what} did not start within {READY_TIMEOUT:.0f} s")
        if self._startup_error is not None:
            self.close()
            raise self._startup_error

    def send(self, item: object) -> None:
        """One frame, in one write (one system call, so one wait for the GIL after it) where the pipe has room."""
        frame = memoryview(framed(item))
        try:
            with self._sending:
                while frame:
                    frame = frame[os.write(self._fd, frame) :]
        except (OSError, ValueError) as exc:
            raise BridgeqError(f"the {self.what} ended unexpectedly ({self._exit_status()})") from exc

    def close(self) -> None:
        """Close its stdin (it finishes, or drops, what it was doing and exits) and wait for it. Idempotent."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError, ValueError):
            self._input.close()
        try:
            self._process.wait(timeout=self._exit_wait)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._replies.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            self._output.close()

    def _read(self) -> None:
        try:
            while (frame := read_frame(self._output)) is not None:
                reply = pickle.loads(frame)
                if reply[0] in (READY, BOOT_FAILED):
                    if reply[1] is not None:
                        self._startup_error = self.error(reply[1], reply[0] == BOOT_FAILED)
                    self._ready.set()
                else:
                    self.on_reply(reply)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            pass
        finally:
            if not self._ready.is_set():
                self._startup_error = ChildStartError(f"the {self.what} ended at start ({self._exit_status()})")
                self._ready.set()
            elif not (self._closing or self.failed):
                self.outcomes.put(Failed(BridgeqError(f"the {self.what} ended unexpectedly ({self._exit_status()})")))

    def _exit_status(self) -> str:
        try:
            code = self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def error(self, failure: Failure, boot: bool = False) -> BridgeqError:
        """The child's error as the same bridgeq error here, with the password scrubbed from its text."""
        name, text, ids = failure
        if self._secret and len(self._secret) > 2:
            text = text.replace(self._secret, REDACTED)
        if boot:
            return ChildStartError(f"the {self.what} could not start: {name}: {text}")
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, PublishError):
            return kind(text, tuple(ids))
        if isinstance(kind, type) and issubclass(kind, BridgeqError):
            return kind(text)
        return BridgeqError(f"the {self.what} failed: {name}: {text}")


def run_child(open_: Callable[[tuple[Any, ...]], T], serve: Callable[[IO[bytes], Replies, T], None]) -> None:
    """A child's whole life: read its setup, ``open_`` its broker (the ready reply says how that went),
    then ``serve`` its stdin until it ends. It never returns: the process exits."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop
    try:
        commands = sys.stdin.buffer
        replies = Replies(os.fdopen(os.dup(1), "wb"))
        os.dup2(2, 1)  # a stray print goes to stderr, not into the replies
        frame = read_frame(commands)
        if frame is None:
            return
        try:
            opened = open_(pickle.loads(frame))
        except BaseException as exc:
            replies.send((READY, describe(exc)))
            return
        replies.send((READY, None))
        gc.freeze()  # what the setup made lives as long as the process: no collection need look at it
        gc.set_threshold(*CHILD_GC_THRESHOLDS)
        serve(commands, replies, opened)
    except BaseException:
        pass  # the parent has gone (broken pipe) or learnt the error already
    finally:
        os._exit(0)


class Replies:
    """A child's stdout, one whole frame at a time from any of its threads."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, item: object) -> None:
        data = framed(item)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def framed(item: object) -> bytes:
    """``item`` as one frame: its pickle's length, then the pickle."""
    data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def describe(exc: BaseException) -> Failure:
    return type(exc).__name__, str(exc), tuple(getattr(exc, "message_ids", ()))


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame's payload, or None at EOF."""
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (size,) = LENGTH.unpack(head)
    data = stream.read(size)
    return data if len(data) == size else None


def widen(fd: int) -> None:
    """Ask for a PIPE_SIZE buffer (Linux only; elsewhere, or when refused, the default stays)."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
