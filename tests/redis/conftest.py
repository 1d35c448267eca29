"""Fixtures for the Redis backend's own tests: a real server from BRIDGEQ_TEST_REDIS_URL.

Unset: every test here skips, unless BRIDGEQ_TEST_REQUIRE names redis (or is
``all``): then it fails. The URL's ``claim_idle_ms`` is set to 2000 unless given.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

import bridgeq
from bridgeq.testing.targets import url_or_skip, with_options

CLAIM_IDLE_MS = 2000


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = url_or_skip("redis")
    if "claim_idle_ms=" not in url:
        url = with_options(url, claim_idle_ms=CLAIM_IDLE_MS)
    return url


@pytest.fixture
def raw(redis_url: str) -> Iterator[object]:
    """A plain redis-py client on the same server and database."""
    import redis

    parts = urlsplit(redis_url)
    client = redis.Redis(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        db=int(parts.path.strip("/") or 0),
        username=parts.username or None,
        password=parts.password or None,
        ssl=parts.scheme == "rediss",
    )
    yield client
    client.close()


@pytest.fixture
def topic(redis_url: str) -> Iterator[str]:
    """A fresh topic name; its stream (default prefix) is deleted afterwards."""
    name = f"bq-redis-test-{uuid.uuid4().hex[:10]}"
    yield name
    with bridgeq.connect(redis_url) as broker:
        broker.delete(name)
        broker.delete(f"{name}.g.dlq")


@pytest.fixture
def broker(redis_url: str) -> Iterator[bridgeq.Broker]:
    with bridgeq.connect(redis_url) as b:
        yield b


@pytest.fixture
def claim_idle_s(redis_url: str) -> float:
    """The claim_idle_ms of the test URL, in seconds."""
    return int(dict(parse_qsl(urlsplit(redis_url).query))["claim_idle_ms"]) / 1000


# -- a private server for password and TLS tests (never the shared one) ---------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bridgeq test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip


class PrivateServer:
    password = "s3cret-pw/with:odd@chars"

    def __init__(self, port: int, tls_port: int, certs: Path) -> None:
        self.port, self.tls_port, self.certs = port, tls_port, certs


@pytest.fixture(scope="session")
def private_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    """A redis-server of our own with a password and a TLS port, stopped at the end."""
    if not shutil.which("redis-server") or not shutil.which("openssl"):
        pytest.skip("redis-server and openssl are needed for the password/TLS tests")
    d = tmp_path_factory.mktemp("redis-private")
    _make_certs(d)
    server = PrivateServer(_free_port(), _free_port(), d)
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(server.port), "--tls-port", str(server.tls_port),
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--requirepass", server.password, "--save", "", "--appendonly", "no",
         "--dir", str(d)],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", server.tls_port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("could not start a private redis-server with TLS")
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
