"""A TCP proxy for fault tests: client -> 127.0.0.1:port -> one broker address, breakable on demand.

    with Proxy(("127.0.0.1", 6379)) as proxy:
        broker = bridgeq.connect(proxied_url("redis://127.0.0.1:6379/0", proxy))
        proxy.drop()             # reset every connection now (the client sees ECONNRESET)
        proxy.blackhole(3.0)     # for 3 s bytes vanish both ways; then the connections that lost bytes are reset
        proxy.stall(3.0)         # for 3 s nothing moves; then everything moves on (a partition TCP heals)

One thread and one selector serve every connection. It is bounded: it listens on
127.0.0.1 only, holds at most ``max_connections`` connections (more are reset at
once), buffers at most ``BUFFER_LIMIT`` bytes per direction before it stops
reading (backpressure), and no fault lasts longer than ``MAX_FAULT_SECONDS``.

Kafka clients connect to the address the broker *advertises*, not to the one they
were given. With ``kafka=True`` the proxy rewrites the advertised port of the
upstream broker in every response frame (metadata, find-coordinator, ...) to its
own, so every connection goes through it. The host bytes stay the same (only the
4-byte port changes), so no length changes; this works for one broker, not for a
cluster whose other brokers are advertised elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridgeq.url import BrokerURL, Host, parse

log = logging.getLogger("bridgeq.testing.proxy")

BUFFER_LIMIT = 1 << 20
"""Bytes held per direction of one connection before the proxy stops reading that side."""
MAX_FAULT_SECONDS = 60.0
MAX_KAFKA_FRAME = 256 << 20
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671, "kafka": 9092}
"""The port a built-in scheme means when its URL names none."""

OPEN, STALL, BLACKHOLE = "open", "stall", "blackhole"


@dataclass
class ProxyStats:
    """What the proxy did so far (read with :attr:`Proxy.stats`)."""

    accepted: int = 0
    reset: int = 0
    """Connections the proxy reset (drop, black hole, over the limit, upstream refused)."""
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_lost: int = 0
    """Bytes swallowed by black holes."""
    rewrites: int = 0
    """Advertised addresses rewritten (kafka=True)."""


class _Pair:
    """One client connection and its upstream connection."""

    __slots__ = ("client", "connected", "down", "frames", "lost", "up", "upstream")

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.connected = False  # the upstream connect finished
        self.up = bytearray()  # client -> broker, not yet written
        self.down = bytearray()  # broker -> client, not yet written
        self.frames = bytearray()  # broker -> client, an incomplete Kafka frame (kafka=True)
        self.lost = False  # a black hole swallowed bytes of this connection


class Proxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` until closed; see the module docstring."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        kafka: bool = False,
        advertised_hosts: Iterable[str] = (),
        max_connections: int = 128,
    ) -> None:
        self.upstream = upstream
        self.max_connections = max_connections
        self.stats = ProxyStats()
        self._mode = OPEN
        self._fault_ends = 0.0
        self._pairs: dict[socket.socket, _Pair] = {}
        self._selector = selectors.DefaultSelector()
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._rewrites: list[tuple[bytes, bytes]] = []
        if kafka:
            hosts = {upstream[0], "127.0.0.1", "localhost", *advertised_hosts}
            old, new = struct.pack(">i", upstream[1]), struct.pack(">i", self.address[1])
            self._rewrites = [(h.encode() + old, h.encode() + new) for h in sorted(hosts)]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._thread = threading.Thread(target=self._loop, name="bridgeq-test-proxy", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def mode(self) -> str:
        """``open``, ``stall`` or ``blackhole``."""
        return self._mode

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        return sum(1 for sock, pair in list(self._pairs.items()) if sock is pair.client)

    def drop(self) -> None:
        """Reset every connection now (RST: the client reads ECONNRESET). New connections work."""
        self._call(self._io_drop)

    def blackhole(self, seconds: float) -> None:
        """For ``seconds``, bytes vanish both ways and new connections are swallowed too;
        then every connection that lost bytes is reset (what a long-dead path ends in)."""
        self._fault(BLACKHOLE, seconds)

    def stall(self, seconds: float) -> None:
        """For ``seconds``, nothing is read, written or accepted; then everything moves on."""
        self._fault(STALL, seconds)

    def heal(self) -> None:
        """End a black hole or stall now."""
        self._call(self._io_heal)

    def wait_healed(self, timeout: float = MAX_FAULT_SECONDS + 5) -> bool:
        """Block until no fault is in force; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self._mode != OPEN:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Reset every connection, stop listening and stop the thread. Idempotent."""
        if self._closed:
            return
        self._call(self._io_close)
        self._thread.join(5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Proxy 127.0.0.1:{self.port} -> {self.upstream[0]}:{self.upstream[1]} {self._mode}>"

    def _fault(self, mode: str, seconds: float) -> None:
        if not 0 < seconds <= MAX_FAULT_SECONDS:
            raise ValueError(f"a fault lasts more than 0 and at most {MAX_FAULT_SECONDS:g} s, not {seconds!r}")

        def start() -> None:
            self._fault_ends = time.monotonic() + seconds
            self._mode = mode
            self._refresh_all()

        self._call(start)

    def _call(self, command: Callable[[], None]) -> None:
        """Run ``command`` on the proxy thread; returns once it ran (or the proxy closed)."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return
            self._commands.append((command, done))
        try:
            self._wake_w.send(b"x")
        except OSError:
            return
        while not done.wait(0.05):
            if not self._thread.is_alive():
                return

    # -- the proxy thread ------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._closed:
                timeout = 0.5
                if self._mode != OPEN:
                    timeout = max(0.0, min(timeout, self._fault_ends - time.monotonic()))
                for key, events in self._selector.select(timeout):
                    if self._closed:
                        break
                    self._dispatch(key, events)
                if self._mode != OPEN and time.monotonic() >= self._fault_ends:
                    self._io_heal()
        except Exception:
            log.exception("the test proxy failed")
        finally:
            self._io_close()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        what = key.data
        if what == "wake":
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
            with self._lock:
                commands, self._commands = self._commands, []
            for command, done in commands:
                try:
                    command()
                finally:
                    done.set()
            return
        if what == "accept":
            self._accept()
            return
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        pair = self._pairs.get(sock)
        if pair is None:
            return
        if sock is pair.upstream and not pair.connected and events & selectors.EVENT_WRITE:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._reset(pair)
                return
            pair.connected = True
        if events & selectors.EVENT_READ and not self._read(pair, sock):
            return
        if events & selectors.EVENT_WRITE and not self._write(pair, sock):
            return
        self._refresh(pair)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("test proxy: accept failed: %r", exc)
                return
            self.stats.accepted += 1
            client.setblocking(False)
            if len(self._pairs) >= 2 * self.max_connections:  # two sockets per connection
                _reset_socket(client)
                self.stats.reset += 1
                continue
            pair = _Pair(client)
            self._pairs[client] = pair
            if self._mode != BLACKHOLE:
                self._connect_upstream(pair)
            self._refresh(pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        upstream = socket.socket(socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = upstream.connect_ex(self.upstream)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            upstream.close()
            self._reset(pair)
            return
        pair.upstream = upstream
        pair.connected = code == 0
        self._pairs[upstream] = pair
        self._selector.register(upstream, selectors.EVENT_WRITE, "conn")

    def _read(self, pair: _Pair, sock: socket.socket) -> bool:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._reset(pair)
            return False
        if not data:  # EOF: pass on what is buffered, then close both sides
            self._finish(pair)
            return False
        if self._mode == BLACKHOLE:
            pair.lost = True
            self.stats.bytes_lost += len(data)
            return True
        if sock is pair.client:
            pair.up += data
            self.stats.bytes_up += len(data)
        elif self._rewrites:
            pair.frames += data
            self.stats.bytes_down += len(data)
            self._reframe(pair)
        else:
            pair.down += data
            self.stats.bytes_down += len(data)
        return True

    def _reframe(self, pair: _Pair) -> None:
        """Move complete Kafka response frames to the client buffer, advertised port rewritten."""
        frames = pair.frames
        while len(frames) >= 4:
            size = struct.unpack_from(">i", frames)[0]
            if size < 0 or size > MAX_KAFKA_FRAME:  # not Kafka after all: pass everything on untouched
                pair.down += frames
                frames.clear()
                return
            if len(frames) < 4 + size:
                return
            frame = bytes(frames[: 4 + size])
            del frames[: 4 + size]
            for old, new in self._rewrites:
                if old in frame:
                    self.stats.rewrites += frame.count(old)
                    frame = frame.replace(old, new)
            pair.down += frame

    def _write(self, pair: _Pair, sock: socket.socket) -> bool:
        buffer = pair.down if sock is pair.client else pair.up
        if not buffer:
            return True
        try:
            sent = sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._reset(pair)
            return False
        del buffer[:sent]
        return True

    def _refresh_all(self) -> None:
        for pair in {id(p): p for p in self._pairs.values()}.values():
            self._refresh(pair)

    def _refresh(self, pair: _Pair) -> None:
        """Register each socket of ``pair`` for what it may do in the current mode."""
        mode = self._mode
        listening = selectors.EVENT_READ if mode != STALL else 0
        self._set(self._listener, listening, "accept")
        for sock, inbox, outbox in ((pair.client, pair.up, pair.down), (pair.upstream, pair.down, pair.up)):
            if sock is None:
                continue
            events = 0
            if sock is pair.upstream and not pair.connected:
                events = selectors.EVENT_WRITE
            elif mode == BLACKHOLE:
                events = selectors.EVENT_READ
            elif mode == OPEN:
                if len(inbox) < BUFFER_LIMIT:
                    events |= selectors.EVENT_READ
                if outbox:
                    events |= selectors.EVENT_WRITE
            self._set(sock, events, "conn")

    def _set(self, sock: socket.socket, events: int, data: str) -> None:
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, data)
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, data)

    def _io_heal(self) -> None:
        was, self._mode = self._mode, OPEN
        if was == BLACKHOLE:
            for pair in {id(p): p for p in self._pairs.values()}.values():
                if pair.lost or pair.upstream is None:
                    self._reset(pair)
        self._refresh_all()

    def _io_drop(self) -> None:
        for pair in {id(p): p for p in self._pairs.values()}.values():
            self._reset(pair)

    def _finish(self, pair: _Pair) -> None:
        """One side closed: best effort to pass on what is buffered, then close both."""
        for sock, buffer in ((pair.client, pair.down), (pair.upstream, pair.up)):
            if sock is not None and buffer and self._mode == OPEN:
                try:
                    sock.setblocking(True)
                    sock.settimeout(0.5)
                    sock.sendall(buffer)
                except OSError:
                    pass
        self._forget(pair)
        for sock in (pair.client, pair.upstream):
            if sock is not None:
                sock.close()

    def _reset(self, pair: _Pair) -> None:
        self._forget(pair)
        self.stats.reset += 1
        for sock in (pair.client, pair.upstream):
            if sock is not None:
                _reset_socket(sock)

    def _forget(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.upstream):
            if sock is not None and self._pairs.pop(sock, None) is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)

    def _io_close(self) -> None:
        if self._closed and not self._pairs:
            return
        self._closed = True
        self._io_drop()
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()


def _reset_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def upstream_of(url: str | BrokerURL) -> tuple[str, int] | None:
    """The one (host, port) a broker URL connects to, or None (no host, several hosts, unknown port)."""
    parsed = parse(url) if isinstance(url, str) else url
    if len(parsed.hosts) != 1:
        return None
    host = parsed.hosts[0]
    port = host.port or DEFAULT_PORTS.get(parsed.scheme)
    if port is None:
        return None
    return host.name, port


def proxied_url(url: str | BrokerURL, proxy: Proxy) -> str:
    """``url`` pointed at ``proxy`` instead of its broker, password and options kept (not for display)."""
    parsed = parse(url) if isinstance(url, str) else url
    return parsed._replace(hosts=(Host("127.0.0.1", proxy.port),)).render(hide_password=False)
