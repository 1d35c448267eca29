"""Secrets: a sentinel password never shows, and TLS verification is on by default.

Per broker, the sentinel password is used to connect (wrong password against the real
broker, and a closed port); it must not appear in any exception (the whole chain and its
traceback), repr, log record of any logger at DEBUG (client libraries' included), or the
CLI's output (errors, ``bridgeq check``). A private redis-server with that password also
checks the path where everything works. For rediss://, amqps:// and Kafka SSL a TLS server
with a certificate nobody trusts must never complete a handshake unless asked to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import bridgeq
from bridgeq.testing.support import collect
from bridgeq.url import parse
from tests.faults.fault_support import closed_port, url_of

PASSWORD = "S3nt1nel-pw/7c1e@x:y"
MARK = "S3nt1nel-pw"
"""In the password both raw and percent-encoded: what must never be seen."""
QUOTED = quote(PASSWORD, safe="")


def _assert_clean(where: str, text: str) -> None:
    assert MARK not in text, f"the password shows in {where}: ...{_around(text)}..."
    assert QUOTED not in text


def _around(text: str) -> str:
    at = text.find(MARK)
    return text[max(0, at - 120) : at + 40].replace("\n", " | ")


def _exception_text(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _with_password(url: str, port: int | None = None, user: str = "bridgeq-nobody") -> str:
    """``url`` with the sentinel password (and ``port`` instead of the broker's, if given)."""
    parsed = parse(url)
    host = parsed.hosts[0]
    hosts = (host._replace(port=port),) if port else parsed.hosts
    scheme = parsed.scheme
    query = parsed.query
    if scheme == "kafka":
        query = (*query, ("security_protocol", "SASL_PLAINTEXT"), ("timeout_ms", "1000"))
    if scheme == "amqp":
        user = "guest"
        query = (*query, ("connect_timeout", "5"))
    return parsed._replace(username=user, password=PASSWORD, hosts=hosts, query=query).render(hide_password=False)


def _use(url: str) -> list[str]:
    """Connect and try every kind of call; returns every text a user could see."""
    seen: list[str] = []
    topic = f"bq-secret-{uuid.uuid4().hex[:8]}"
    try:
        broker = bridgeq.connect(url)
    except bridgeq.BridgeqError as exc:
        return [_exception_text(exc)]
    with broker:
        seen += [repr(broker), str(broker), str(broker.url), repr(broker.url), repr(broker.backend)]
        for call in (
            lambda: broker.declare(topic, "g"),
            lambda: broker.publish(topic, b"x", headers={"h": "v"}),
            lambda: broker.publish_batch(topic, [b"a", b"b"]),
            lambda: broker.depth(topic, "g"),
            lambda: broker.subscribe(topic, "g").receive(timeout=0.5),
        ):
            try:
                call()
            except bridgeq.BridgeqError as exc:
                seen.append(_exception_text(exc))
            except Exception as exc:
                seen.append(_exception_text(exc))
                pytest.fail(f"a non-bridgeq error escaped: {type(exc).__name__}: {exc}")
    return seen


def _cli(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridgeq.cli", *args],
        input="a message\n",
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    return done.stdout + done.stderr


def _cli_outputs(url: str) -> list[tuple[str, str]]:
    topic = f"bq-secret-{uuid.uuid4().hex[:8]}"
    return [
        ("publish", _cli("publish", url, topic)),
        ("consume", _cli("consume", url, topic, "--group", "g", "--max", "1", "--timeout", "1")),
        ("stats", _cli("stats", url, topic, "--group", "g", "--interval", "0.1")),
        ("check", _cli("check", url, "-k", "empty_body", "--json")),
        ("check table", _cli("check", url, "-k", "empty_body")),
    ]


@pytest.mark.parametrize("where", ["wrong password", "closed port"])
@pytest.mark.parametrize("backend", ["redis", "rabbitmq", "kafka"])
def test_the_password_never_shows(backend, where, all_logs, capfd):
    url = _with_password(url_of(backend), closed_port() if where == "closed port" else None)
    seen = _use(url)
    time.sleep(0.5)  # client I/O threads log a little later
    for n, text in enumerate(seen):
        _assert_clean(f"what the API showed (#{n})", text)
    _assert_clean("the logs at DEBUG", all_logs.text)
    out, err = capfd.readouterr()
    _assert_clean("stdout/stderr", out + err)
    assert any("Error" in text for text in seen), f"{where} should fail: {seen}"


@pytest.mark.parametrize("backend", ["redis", "rabbitmq", "kafka"])
def test_the_password_never_shows_in_the_cli(backend):
    for where, url in (("wrong password", _with_password(url_of(backend))),):
        for command, output in _cli_outputs(url):
            _assert_clean(f"`bridgeq {command}` with a {where}", output)
            assert "Traceback" not in output, f"`bridgeq {command}` printed a traceback: {output[-800:]}"


# -- a private redis-server with the sentinel password: the path where everything works -----


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis://:<sentinel>@127.0.0.1:<port>/0 on a redis-server of our own, stopped afterwards."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is needed for the private password server")
    folder = tmp_path_factory.mktemp("redis-secret")
    port = closed_port()
    conf = folder / "redis.conf"  # the password in a file, not on a command line others can read
    conf.write_text(f'bind 127.0.0.1\nport {port}\nrequirepass "{PASSWORD}"\nsave ""\nappendonly no\ndir {folder}\n')
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("could not start a private redis-server")
                time.sleep(0.05)
        yield f"redis://:{QUOTED}@127.0.0.1:{port}/0?claim_idle_ms=1000"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_password_never_shows_when_everything_works(private_redis, all_logs, capfd, tmp_path):
    url = private_redis
    topic = f"bq-secret-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    with bridgeq.connect(url) as broker:
        broker.declare(topic, "g")
        broker.publish_batch(topic, [bridgeq.Message(b"x", key="k", headers={"h": "v"}) for _ in range(5)])
        with broker.subscribe(topic, "g") as sub:
            got = collect(sub, 5, ack=False)
            seen += [repr(sub), *map(repr, got)]
            got[0].nack(requeue=False, reason="to the dead letters")
            sub.ack(got[1:])
        seen += [repr(broker), str(broker.url), repr(broker.backend), repr(broker.depth(topic, "g"))]
    report = bridgeq.migrate(url, "memory://secret-dst", topic, checkpoint=str(tmp_path / "ck"), verify=True)
    seen += [repr(report), str(report.source)]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            seen.append(path.read_text(errors="replace"))
    seen += [output for _, output in _cli_outputs(url)]
    seen.append(_cli("migrate", url, "memory://secret-dst2", "--topic", topic, "--checkpoint", str(tmp_path / "ck2")))
    time.sleep(0.3)
    for n, text in enumerate(seen):
        _assert_clean(f"output #{n}", text)
    _assert_clean("the logs at DEBUG", all_logs.text)
    out, err = capfd.readouterr()
    _assert_clean("stdout/stderr", out + err)


# -- TLS verification on by default ------------------------------------------------------------


class TLSServer:
    """Accepts TLS on 127.0.0.1 with the given certificate; counts completed handshakes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.completed = 0
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    self.completed += 1
            except (ssl.SSLError, OSError) as exc:
                self.refused.append(f"{type(exc).__name__}: {exc}")
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA nobody trusts; a server certificate for 127.0.0.1/localhost and one for another name."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make test certificates")
    folder = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bridgeq fault CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    for name, san in (("good", "IP:127.0.0.1,DNS:localhost"), ("misnamed", "DNS:elsewhere.example")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")  # fmt: skip
    return folder


@contextlib.contextmanager
def tls_server(certs: Path, name: str) -> Iterator[TLSServer]:
    server = TLSServer(certs / f"{name}.crt", certs / f"{name}.key")
    try:
        yield server
    finally:
        server.close()


def _tls_url(scheme: str, port: int, **options: str) -> str:
    base = {
        "rediss": f"rediss://127.0.0.1:{port}/0?socket_timeout=3&connect_timeout=3&retries=0",
        "amqps": f"amqps://guest:guest@127.0.0.1:{port}/%2F?connect_timeout=3",
        "kafka": f"kafka://127.0.0.1:{port}?security_protocol=SSL&timeout_ms=2000",
    }[scheme]
    return base + "".join(f"&{k}={v}" for k, v in options.items())


def _handshake(url: str) -> str:
    """Connect and make one call; returns the error's text (the server closes after the handshake)."""
    try:
        with bridgeq.connect(url) as broker:
            broker.declare(f"bq-tls-{uuid.uuid4().hex[:6]}", "g")
    except bridgeq.BridgeqError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


CA_OPTION = {"rediss": "tls_ca_file", "amqps": "ca_file", "kafka": "ssl_cafile"}
INSECURE = {"rediss": {"tls_insecure": "true"}, "amqps": {"tls_verify": "false"}}


@pytest.mark.parametrize("scheme", ["rediss", "amqps", "kafka"])
def test_tls_verification_is_on_by_default(scheme, certs):
    ca = {CA_OPTION[scheme]: str(certs / "ca.crt")}
    with tls_server(certs, "good") as server:
        untrusted = _handshake(_tls_url(scheme, server.port))
        assert server.completed == 0, f"{scheme}: a certificate from an unknown CA was accepted"
        assert "no error" not in untrusted
        _handshake(_tls_url(scheme, server.port, **ca))
        assert server.completed >= 1, f"{scheme}: the test server is not reachable: {server.refused}"
    with tls_server(certs, "misnamed") as server:
        misnamed = _handshake(_tls_url(scheme, server.port, **ca))
        assert server.completed == 0, f"{scheme}: a certificate for another host name was accepted"
        assert "no error" not in misnamed


@pytest.mark.parametrize("scheme", ["rediss", "amqps"])
def test_tls_verification_is_off_only_when_asked(scheme, certs):
    with tls_server(certs, "good") as server:
        _handshake(_tls_url(scheme, server.port, **INSECURE[scheme]))
        assert server.completed >= 1


def test_kafka_host_name_check_is_off_only_when_asked(certs):
    with tls_server(certs, "misnamed") as server:
        _handshake(_tls_url("kafka", server.port, ssl_cafile=str(certs / "ca.crt"), ssl_check_hostname="false"))
        assert server.completed >= 1


def test_an_untrusted_certificate_is_a_clear_error(certs):
    """The user should be told it is about the certificate, not just 'connection lost'."""
    with tls_server(certs, "good") as server:
        for scheme in ("rediss", "amqps", "kafka"):
            text = _handshake(_tls_url(scheme, server.port))
            assert "certif" in text.lower(), f"{scheme}: {text}"
