"""The fault tools themselves: the checker's arithmetic and the proxy's faults, without a broker."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from bridgeq.testing.faults import Tally, check
from bridgeq.testing.proxy import MAX_FAULT_SECONDS, Proxy, proxied_url, upstream_of

# -- the checker ---------------------------------------------------------------------------


def test_lost_duplicated_and_unknown():
    verdict = check(["a", "b", "c"], ["a", "b", "a", "x"], published=["a", "b", "c", "d"])
    assert verdict.lost == ("c",)
    assert verdict.duplicated == 1
    assert verdict.unknown == ("x",)
    assert (verdict.published, verdict.confirmed, verdict.received, verdict.unique) == (4, 3, 4, 3)
    assert not verdict.ok


def test_out_of_order_counts_first_deliveries_per_key():
    order = {"k1": ["a", "b", "c"], "k2": ["x", "y"]}
    # b before a (one late), c in place; a redelivery of x after y does not count: first deliveries only.
    verdict = check(["a", "b", "c", "x", "y"], ["x", "b", "a", "y", "x", "c"], order=order)
    assert verdict.out_of_order == 1
    assert verdict.ok and verdict.duplicated == 1


def test_unconfirmed_but_received_is_not_unknown():
    verdict = check(["a"], ["a", "b"], published=["a", "b"])
    assert verdict.ok and verdict.unknown == ()


def test_tally_is_safe_across_threads():
    import bridgeq

    tally = Tally()

    def work(n: int) -> None:
        messages = [bridgeq.Message(b"x", key=f"k{n}", id=f"{n}-{i}") for i in range(1000)]
        tally.sent(messages)
        tally.confirm(m.id for m in messages)
        tally.receive(messages)  # type: ignore[arg-type]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    verdict = tally.verdict()
    assert verdict.row() == {
        "published": 8000,
        "confirmed": 8000,
        "received": 8000,
        "lost": 0,
        "duplicated": 0,
        "out_of_order": 0,
        "unknown": 0,
    }


# -- the proxy -----------------------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """An echo server on 127.0.0.1 (one thread per connection)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    stop.set()
    thread.join(2)
    server.close()


def _client(proxy: Proxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=5)
    return sock


def _roundtrip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways_and_listens_on_loopback_only(echo):
    with Proxy(echo) as proxy:
        assert proxy.address[0] == "127.0.0.1"
        with _client(proxy) as sock:
            assert _roundtrip(sock, b"x" * 300_000) == b"x" * 300_000
        assert proxy.stats.bytes_up >= 300_000 and proxy.stats.bytes_down >= 300_000


def _expect_reset_then_reconnect(proxy: Proxy, sock: socket.socket) -> None:
    """``sock`` was reset (it shows within a few round trips); a new connection works."""
    with pytest.raises(OSError):
        for _ in range(3):
            if not _roundtrip(sock):
                raise ConnectionResetError("EOF")
    sock.close()
    with _client(proxy) as again:
        assert _roundtrip(again) == b"ping"


def test_drop_resets_every_connection_and_new_ones_work(echo):
    with Proxy(echo) as proxy:
        first = _client(proxy)
        assert _roundtrip(first) == b"ping"
        proxy.drop()
        _expect_reset_then_reconnect(proxy, first)
        assert proxy.stats.reset >= 1


def test_blackhole_swallows_then_resets_what_lost_bytes(echo):
    with Proxy(echo) as proxy:
        sock = _client(proxy)
        assert _roundtrip(sock) == b"ping"
        proxy.blackhole(1.0)
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(10)
        assert proxy.wait_healed(5)
        sock.settimeout(5)
        _expect_reset_then_reconnect(proxy, sock)
        assert proxy.stats.bytes_lost >= 4


def test_stall_delays_without_losing(echo):
    with Proxy(echo) as proxy, _client(proxy) as sock:
        assert _roundtrip(sock) == b"ping"
        proxy.stall(1.0)
        started = time.monotonic()
        assert _roundtrip(sock, b"late") == b"late"
        assert 0.8 <= time.monotonic() - started < 5


def test_faults_are_bounded(echo):
    with Proxy(echo) as proxy:
        for seconds in (0, -1, MAX_FAULT_SECONDS + 1):
            with pytest.raises(ValueError):
                proxy.blackhole(seconds)
        assert proxy.mode == "open"


def test_connections_beyond_the_limit_are_reset(echo):
    with Proxy(echo, max_connections=2) as proxy:
        held = [_client(proxy) for _ in range(2)]
        for sock in held:
            assert _roundtrip(sock) == b"ping"
        with pytest.raises(OSError), _client(proxy) as extra:  # the reset may come as early as the connect
            if not _roundtrip(extra):
                raise ConnectionResetError("EOF")
        for sock in held:
            assert _roundtrip(sock) == b"ping", "the connections within the limit are untouched"
            sock.close()


def test_kafka_mode_rewrites_the_advertised_port():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    body = b"\x00\x00\x00\x07" + struct.pack(">h", 9) + b"127.0.0.1" + struct.pack(">i", port) + b"tail"
    frame = struct.pack(">i", len(body)) + body

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(100)
            conn.sendall(frame[:5])  # split across writes: the proxy reassembles the frame
            time.sleep(0.05)
            conn.sendall(frame[5:])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with Proxy(("127.0.0.1", port), kafka=True) as proxy, _client(proxy) as sock:
        sock.sendall(b"request")
        got = b""
        while len(got) < len(frame):
            got += sock.recv(1000)
        assert got == frame.replace(struct.pack(">i", port), struct.pack(">i", proxy.port))
        assert proxy.stats.rewrites == 1
    thread.join(2)
    server.close()


def test_urls_through_the_proxy_keep_credentials_and_options(echo):
    with Proxy(echo) as proxy:
        url = proxied_url("amqp://u:p%40ss@broker.example:5671/vh?heartbeat=5", proxy)
        assert url == f"amqp://u:p%40ss@127.0.0.1:{proxy.port}/vh?heartbeat=5"
    assert upstream_of("redis://h") == ("h", 6379)
    assert upstream_of("kafka://h1:1,h2:2") is None
    assert upstream_of("memory://") is None
    assert upstream_of("nats://h") is None
