"""amqps:// through a TLS-terminating proxy in front of the test server (no TLS setup on the broker)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridgeq
from bridgeq.testing.support import collect
from bridgeq.url import parse


def _make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bridgeq test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class TLSProxy:
    """Accepts TLS on a free port and forwards the plain bytes to the broker."""

    def __init__(self, upstream: tuple[str, int], certs: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs / "server.crt", certs / "server.key")
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()
            return
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=_pump, args=(secure, upstream), daemon=True).start()
        _pump(upstream, secure)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def tls(rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(an amqps:// URL without TLS options, the CA file) for a proxy in front of the test server."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make test certificates")
    certs = tmp_path_factory.mktemp("amqps")
    _make_certs(certs)
    u = parse(rabbitmq_url)
    proxy = TLSProxy((u.hosts[0].name, u.hosts[0].port or 5672), certs)
    auth = f"{u.username or 'guest'}:{u.password or 'guest'}@"
    vhost = (u.path or "/").replace("/", "%2F")
    yield f"amqps://{auth}localhost:{proxy.port}/{vhost}?connect_timeout=5", certs / "ca.crt"
    proxy.close()


def _round_trip(url: str) -> None:
    topic = f"bq-rmq-tls-{uuid.uuid4().hex[:8]}"
    with bridgeq.connect(url) as broker:
        broker.declare(topic, "g")
        mid = broker.publish(topic, b"over TLS")
        with broker.subscribe(topic, "g") as sub:
            assert [d.id for d in collect(sub, 1)] == [mid]
        broker.delete(topic)


def test_amqps_with_the_ca_file_verifies_and_works(tls):
    url, ca = tls
    _round_trip(f"{url}&ca_file={ca}")


def test_amqps_verifies_by_default_and_refuses_an_unknown_ca(tls):
    url, _ = tls
    with pytest.raises(bridgeq.ConfigError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        bridgeq.connect(url)


def test_amqps_verification_can_be_turned_off(tls):
    url, _ = tls
    _round_trip(f"{url}&tls_verify=false")
