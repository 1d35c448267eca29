"""Bad input: every mistake is a ConfigError with a clear message, raised before anything is sent.

- any string given to ``connect()`` yields a broker or a ConfigError (a ConnectionLost only
  for a well-formed URL whose backend connects eagerly and finds nobody), never anything else;
- hand-picked malformed URLs and options for every scheme, the CLI printing one line and exit 2;
- invalid topic and group names, wrong body/header/key/id types and oversize messages, per
  broker, checked with a spy on the backend: nothing reaches the broker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridgeq
from bridgeq import registry
from bridgeq.cli import main
from bridgeq.testing.support import collect, quiet
from tests.faults.fault_support import Spy, closed_port, spied

# -- connect(): any string ----------------------------------------------------------------

ENV_URLS = ("BRIDGEQ_TEST_REDIS_URL", "BRIDGEQ_TEST_RABBITMQ_URL", "BRIDGEQ_TEST_KAFKA_URL")


def _port_of(url: str) -> int | None:
    try:
        hosts = bridgeq.url.parse(url).hosts
    except bridgeq.ConfigError:
        return None
    return hosts[0].port if hosts else None


ALLOWED_HOSTS = {"127.0.0.1", "localhost", "::1"}
LIVE_PORTS = {5671, 5672, 6379, 6380, 9092, 9093} | {
    port for url in filter(None, map(os.environ.get, ENV_URLS)) if (port := _port_of(url)) is not None
}
"""Ports real brokers may listen on: the property tests never connect to them."""
_closed_ports = [closed_port() for _ in range(3)]


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Names other than loopback do not resolve; nothing connects to a live broker's port.

    Clients that connect eagerly (pika) run their connects in threads of their own: both
    hooks are process-wide for the duration. Returns the destinations refused.
    """
    refused: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in ALLOWED_HOSTS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test: no network)")
        return real_getaddrinfo(host, *args, **kwargs)

    def allowed(address) -> bool:  # pika connects a loopback socket pair of its own: let it
        return isinstance(address, tuple) and address[0] in ALLOWED_HOSTS and address[1] not in LIVE_PORTS

    def connect(self, address):
        if not allowed(address):
            refused.append(repr(address))
            raise ConnectionRefusedError(111, "Connection refused (test: no network)")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not allowed(address):
            refused.append(repr(address))
            return 111
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]


SCHEMES = ["memory", "redis", "rediss", "amqp", "amqps", "kafka"]
OPTION_NAMES = sorted(
    {f for s in SCHEMES for f in registry.load(s).options_type.__dataclass_fields__} | {"x", "", "prefetch_count"}
)
SENTINEL = "pw-SENTINEL-3d9f"
SLOW = 15.0
"""No connect() may take longer than this (pika's connect_timeout is 10 s by default)."""

option_values = st.one_of(
    st.sampled_from(["1", "100", "2000", "30000", "true", "false", "", "x", "latest", "classic", "PLAINTEXT"]),
    st.text(max_size=12),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        ["true", "no", "none", "", "0", "-1", "1e309", "earliest", "quorum", "SSL", "SASL_SSL", "all", "/"]
    ),
)
loopback = st.sampled_from(["127.0.0.1", "localhost", "[::1]"])
hosts = st.one_of(
    st.tuples(loopback, st.sampled_from(_closed_ports)).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.tuples(loopback, st.sampled_from(_closed_ports)).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.sampled_from(["nonexistent.invalid", "broker-1.invalid:9092", "h:0", "h:65536", "h:x", "[::1", ""]),
    st.text(max_size=15),
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES) | st.sampled_from(SCHEMES) | st.text(max_size=8) | st.just("REDIS"))
    userinfo = draw(
        st.sampled_from(["", f":{SENTINEL}@", f"user:{SENTINEL}@", f"u%40x:{SENTINEL}%2F@", "user@", "@", ":@"])
    )
    host_list = ",".join(draw(st.lists(hosts, min_size=0, max_size=2)))
    path = draw(st.sampled_from(["", "/", "/0", "/%2F", "/vhost", "/99", "/a/b", "/-1"]) | st.text(max_size=6))
    pair = st.tuples(st.sampled_from(OPTION_NAMES) | st.text(max_size=6), option_values)
    pairs = draw(st.one_of(st.just([]), st.lists(pair, max_size=3)))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return f"{scheme}://{userinfo}{host_list}{path}" + (f"?{query}" if query or draw(st.booleans()) else "")


def _connect_outcome(text: object) -> str:
    """Connect, judge the outcome, close. Returns the outcome's name."""
    started = time.monotonic()
    try:
        broker = bridgeq.connect(text)  # type: ignore[arg-type]
    except bridgeq.ConfigError as exc:
        _no_secret(exc)
        assert str(exc).strip(), "a ConfigError must say what is wrong"
        outcome = "ConfigError"
    except bridgeq.ConnectionLost as exc:
        _no_secret(exc)
        # Only a URL good enough to try: the backend connected eagerly and found nobody.
        bridgeq.url.parse(text)  # type: ignore[arg-type]
        outcome = "ConnectionLost"
    else:
        try:
            assert SENTINEL not in repr(broker) and SENTINEL not in str(broker.url)
        finally:
            broker.close()
        outcome = "Broker"
    elapsed = time.monotonic() - started
    assert elapsed < SLOW, f"connect({text!r}) took {elapsed:.1f} s"
    return outcome


def _no_secret(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert SENTINEL not in str(seen) and SENTINEL not in repr(seen), f"password in {type(seen).__name__}"
        seen = seen.__cause__ or seen.__context__


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_any_text_is_a_broker_or_a_config_error(text):
    with no_network():
        _connect_outcome(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(urls())
def test_any_url_shaped_string_is_a_broker_or_a_config_error(text):
    with no_network():
        _connect_outcome(text)


@pytest.mark.parametrize("value", [None, 42, b"redis://localhost", ["memory://"], object()])
def test_a_url_that_is_not_a_string(value, monkeypatch):
    monkeypatch.setenv("BRIDGEQ_URL", "memory://")
    if value is None:
        bridgeq.connect(value).close()  # None means $BRIDGEQ_URL
        return
    with pytest.raises(bridgeq.ConfigError, match="must be a str"):
        bridgeq.connect(value)


# -- hand-picked malformed URLs and options ------------------------------------------------

MALFORMED = [
    # (url, words the message must contain)
    ("", "scheme://"),
    ("redis", "scheme://"),
    ("localhost:6379", "scheme://"),
    ("://localhost", "invalid scheme"),
    ("redis:/localhost", "scheme://"),
    ("9redis://h", "invalid scheme"),
    ("re dis://h", "invalid scheme"),
    ("nosuch://localhost", "known schemes"),
    ("reddis://localhost", "did you mean redis"),
    ("http://localhost", "known schemes"),
    ("redis://host:port", "port"),
    ("redis://host:0", "port"),
    ("redis://host:65536", "port"),
    ("redis://host:-1", "port"),
    ("redis://host:6379:1", "more than one ':'"),
    ("redis://h1,,h2", "empty host"),
    ("redis://ho st", "whitespace"),
    ("redis://host\n", "whitespace"),
    ("redis://host#frag", "fragment"),
    ("redis://[::1", "IPv6"),
    ("redis://[::1]x", "IPv6"),
    ("redis://host?a", "query"),
    ("redis://h$st", "host name"),
    ("redis://localhost/db0", "database number"),
    ("redis://h1:6379,h2:6379/0", "one host"),
    ("redis://localhost?claim_idle_ms=10", "claim_idle_ms"),
    ("redis://localhost?claim_idle_ms=soon", "claim_idle_ms"),
    ("redis://localhost?cliam_idle_ms=100", "did you mean 'claim_idle_ms'"),
    ("redis://localhost?maxlen=10&max_age_ms=10", "maxlen"),
    ("redis://localhost?maxlen=-5", "maxlen"),
    ("redis://localhost?group_start=middle", "group_start"),
    ("redis://localhost?renew=maybe", "renew"),
    ("redis://localhost?body_field=ce_id", "body_field"),
    ("redis://localhost?body_field=x&key_field=x", "body_field"),
    ("redis://localhost?max_message_size=0", "max_message_size"),
    ("redis://localhost?max_message_size=999999999999", "max_message_size"),
    ("redis://localhost?socket_timeout=0", "socket_timeout"),
    ("redis://localhost?socket_timeout=0.2", "socket_timeout"),
    ("redis://localhost?socket_timeout=inf", "socket_timeout"),
    ("redis://localhost?socket_timeout=-1", "socket_timeout"),
    ("redis://localhost?tls_insecure=true", "rediss://"),
    ("rediss://localhost?tls_ca_file=/nonexistent/ca.pem", "tls_ca_file"),
    ("amqp://guest:guest@localhost:5672/%2F?heartbeet=10", "did you mean 'heartbeat'"),
    ("amqp://localhost/?heartbeat=70000", "heartbeat"),
    ("amqp://localhost/?heartbeat=-1", "heartbeat"),
    ("amqp://localhost/?prefetch=0", "prefetch"),
    ("amqp://localhost/?prefetch=70000", "prefetch"),
    ("amqp://localhost/?queue_type=stream", "queue_type"),
    ("amqp://localhost/?exchange_type=direct", "exchange_type"),
    ("amqp://localhost/?queue_name={topic}", "queue_name"),
    ("amqp://localhost/?queue_name={nope}{group}", "queue_name"),
    ("amqp://localhost/?connect_timeout=0", "connect_timeout"),
    ("amqp://localhost/?publish_timeout=-5", "publish_timeout"),
    ("amqp://localhost/?confirm=perhaps", "confirm"),
    ("amqp://localhost/?key_file=/tmp/k.pem", "key_file"),
    ("amqp://localhost/?ca_file=/tmp/ca.pem", "amqps://"),
    ("amqps://localhost/?ca_file=/nonexistent/ca.pem", "TLS"),
    ("amqp:///%2F", "host"),
    ("amqp://localhost/?prefix=" + "x" * 101, "prefix"),
    ("kafka://", "host"),
    ("kafka://localhost:9092/path", "no path"),
    ("kafka://localhost:9092?acks=0", "acks"),
    ("kafka://localhost:9092?acks=-1", "acks"),
    ("kafka://localhost:9092?compression=brotli", "compression"),
    ("kafka://localhost:9092?partitions=0", "partitions"),
    ("kafka://localhost:9092?replication_factor=0", "replication_factor"),
    ("kafka://localhost:9092?heartbeat_interval_ms=20000", "heartbeat_interval_ms"),
    ("kafka://localhost:9092?timeout_ms=10", "timeout_ms"),
    ("kafka://localhost:9092?security_protocol=SASL_SSL", "user:password"),
    ("kafka://u:p@localhost:9092?security_protocol=SSL", "SASL"),
    ("kafka://localhost:9092?sasl_mechanism=GSSAPI", "sasl_mechanism"),
    ("kafka://localhost:9092?prefix=bad/prefix", "prefix"),
    ("kafka://localhost:9092?max_message_size=0", "max_message_size"),
    ("kafka://localhost:9092?assignor=sticky", "assignor"),
    ("kafka://localhost:9092?batch_size=0", "batch_size"),
    ("kafka://localhost:9092?session_timeout_ms=lots", "session_timeout_ms"),
    ("memory://?max_message_size=-1", "max_message_size"),
    ("memory://?bogus=1", "unknown option 'bogus'"),
    ("memory://?max_message_size=big", "max_message_size"),
]

PROBES = [
    # Accepted today, though each makes every publish fail: redis:// and kafka:// refuse it at connect.
    ("memory://?max_message_size=0", "max_message_size"),
    ("amqp://localhost/?max_message_size=0", "max_message_size"),
]


@pytest.fixture
def no_connects() -> Iterator[list[str]]:
    """Records (and refuses) every connect to a broker: a malformed URL must be refused before any."""
    with no_network() as refused:
        yield refused


@pytest.mark.parametrize(("url", "words"), MALFORMED, ids=[u[:60] for u, _ in MALFORMED])
def test_malformed_urls_and_options_are_config_errors_before_any_connection(url, words, no_connects):
    started = time.monotonic()
    with pytest.raises(bridgeq.ConfigError) as raised:
        bridgeq.connect(url)
    message = str(raised.value)
    assert words.lower() in message.lower(), f"{message!r} should mention {words!r}"
    assert "\n" not in message and len(message) < 600, "one clear line"
    assert "Traceback" not in message
    assert not no_connects, f"a connection was attempted for a malformed URL: {no_connects}"
    assert time.monotonic() - started < 1.0


def test_there_are_at_least_fifty_hand_picked_cases():
    assert len(MALFORMED) >= 50
    assert {u.partition("://")[0] for u, _ in MALFORMED} >= {"redis", "rediss", "amqp", "amqps", "kafka", "memory"}


@pytest.mark.parametrize(("url", "words"), PROBES, ids=[p[0] for p in PROBES])
def test_an_option_that_makes_every_call_fail_is_refused_at_connect(url, words, no_connects):
    """A max_message_size of 0 rejects every message: it is a configuration mistake, said at once."""
    with pytest.raises(bridgeq.ConfigError, match=words):
        bridgeq.connect(url)


# -- the CLI: one line, exit 2 -------------------------------------------------------------


def _cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def _one_line(stderr: str) -> str:
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    assert "Traceback" not in stderr
    assert lines[0].startswith("bridgeq: error: ")
    return lines[0]


@pytest.mark.parametrize(("url", "words"), MALFORMED, ids=[u[:60] for u, _ in MALFORMED])
def test_cli_prints_one_line_and_exits_2_for_each_malformed_url(url, words, no_connects):
    for command in (["publish", url, "t"], ["consume", url, "t", "--group", "g", "--max", "1"], ["check", url]):
        code, _, stderr = _cli(*command)
        line = _one_line(stderr)
        assert code == 2, f"{command[0]}: exit {code}: {stderr!r}"
        assert words.lower() in line.lower()
    assert not no_connects


def test_cli_one_line_in_a_real_process_with_a_narrow_terminal():
    env = {**os.environ, "COLUMNS": "40", "TERM": "xterm"}
    for url in ("redis://localhost?cliam_idle_ms=100", "amqp://localhost/?queue_name={nope}{group}", "nosuch://x"):
        done = subprocess.run(
            [sys.executable, "-m", "bridgeq.cli", "publish", url, "topic"],
            input="",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 2
        _one_line(done.stderr)


# -- names, types and sizes, per broker ----------------------------------------------------

BAD_NAMES = [
    "",
    " ",
    "has space",
    "slash/name",
    "star*",
    "a" * 121,
    "..",
    ".",
    "ümlaut",
    "tab\tname",
    "new\nline",
    "colon:name",
    "percent%41",
    "hash#x",
    "q?x=1",
    "amp&x",
    "rocket🚀",
    "nul\x00byte",
    "dollar$",
    "brace{x}",
    "comma,x",
    "quote'x",
    5,
    None,
    b"bytes",
]


def _bad_name_calls(broker: bridgeq.Broker, good: str, bad: object) -> list[tuple[str, object]]:
    return [
        ("declare topic", lambda: broker.declare(bad)),
        ("declare group", lambda: broker.declare(good, bad if bad is not None else "")),
        ("publish", lambda: broker.publish(bad, b"x")),
        ("publish_batch", lambda: broker.publish_batch(bad, [b"x", b"y"])),
        ("subscribe topic", lambda: broker.subscribe(bad, good)),
        ("subscribe group", lambda: broker.subscribe(good, bad)),
        ("dead-letter topic", lambda: broker.subscribe(good, good, dead_letter_topic=bad) if bad else None),
        ("depth", lambda: broker.depth(good, bad)),
        ("delete", lambda: broker.delete(bad)),
    ]


def test_invalid_names_are_rejected_before_anything_is_sent(backend_url):
    good = f"bq-names-{uuid.uuid4().hex[:8]}"
    with spied(backend_url) as (broker, spy):
        for bad in BAD_NAMES:
            for what, call in _bad_name_calls(broker, good, bad):
                if what == "dead-letter topic" and not bad:
                    continue  # "" and None mean the default dead-letter topic
                with pytest.raises(bridgeq.ConfigError) as raised:
                    call()
                message = str(raised.value)
                assert "name" in message, f"{what} {bad!r}: {message!r} should say it is about a name"
                assert "\n" not in message
        assert spy.calls == [], f"reached the broker: {spy.calls}"


def test_the_longest_valid_names_work_end_to_end(backend_url):
    """120 characters is valid for a topic and a group: publish, subscribe, nack to the dead letters."""
    tag = uuid.uuid4().hex[:8]
    topic, group = (f"bq-long-{tag}-" + "t" * 120)[:120], (f"bq-long-{tag}-" + "g" * 120)[:120]
    with bridgeq.connect(backend_url) as broker:
        try:
            broker.declare(topic, group)
            mid = broker.publish(topic, b"long names")
            with broker.subscribe(topic, group) as sub:
                [delivery] = collect(sub, 1, ack=False)
                assert delivery.id == mid
                delivery.nack(requeue=False, reason="to the dead letters")
                assert quiet(sub, 0.5) == []
                dead_letters = sub.dead_letter_topic
            with broker.subscribe(dead_letters, group) as dlq:
                [dead] = collect(dlq, 1)
            assert dead.id == mid
        finally:
            for name in (topic, f"{topic}.{group}.dlq"):
                with contextlib.suppress(bridgeq.BridgeqError):
                    broker.delete(name)


BAD_MESSAGES = [
    # (kwargs of publish, words)
    ({"body": 12}, "body"),
    ({"body": 1.5}, "body"),
    ({"body": None}, "body"),
    ({"body": ["x"]}, "body"),
    ({"body": {"a": 1}}, "body"),
    ({"body": True}, "body"),
    ({"body": object()}, "body"),
    ({"headers": {"n": 1}}, "header"),
    ({"headers": {"n": None}}, "header"),
    ({"headers": {"n": b"bytes"}}, "header"),
    ({"headers": {1: "x"}}, "header"),
    ({"headers": {"": "x"}}, "header"),
    ({"headers": "k=v"}, "headers"),
    ({"headers": [("a", "b")]}, "headers"),
    ({"headers": {"ce_id": "x"}}, "reserved"),
    ({"key": 5}, "key"),
    ({"key": b"k"}, "key"),
    ({"key": ["k"]}, "key"),
    ({"id": ""}, "id"),
    ({"id": "x" * 201}, "id"),
    ({"id": "tab\there"}, "id"),
    ({"id": "new\nline"}, "id"),
    ({"id": 5}, "id"),
]


@pytest.mark.parametrize(("kwargs", "words"), BAD_MESSAGES, ids=[repr(k)[:40] for k, _ in BAD_MESSAGES])
def test_wrong_body_header_key_and_id_types_are_config_errors_before_anything_is_sent(backend_url, kwargs, words):
    topic = f"bq-types-{uuid.uuid4().hex[:8]}"
    with spied(backend_url) as (broker, spy):
        body = kwargs.get("body", b"x")
        rest = {k: v for k, v in kwargs.items() if k != "body"}
        with pytest.raises(bridgeq.ConfigError) as raised:
            broker.publish(topic, body, **rest)
        assert words in str(raised.value).lower()
        with pytest.raises(bridgeq.ConfigError):
            broker.publish_batch(topic, [b"fine", bridgeq.Message(b"fine"), _message(kwargs)])
        assert spy.calls == [], f"reached the broker: {spy.calls}"


def _message(kwargs: dict[str, object]) -> object:
    if set(kwargs) == {"body"}:
        return kwargs["body"]  # a bare body in a batch
    return bridgeq.Message(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["body", "header", "key", "batch"])
def test_oversize_messages_are_rejected_before_anything_is_sent(backend_url, where):
    topic, group = f"bq-size-{uuid.uuid4().hex[:8]}", "g"
    with bridgeq.connect(backend_url) as broker:
        limit = broker.capabilities.max_message_size
        try:
            broker.declare(topic, group)
            real = broker.backend
            spy = Spy(real)
            broker.backend = spy  # type: ignore[assignment]
            try:
                with pytest.raises(bridgeq.MessageTooLarge) as raised:
                    if where == "body":
                        broker.publish(topic, b"x" * (limit + 1))
                    elif where == "header":
                        broker.publish(topic, b"x", headers={"big": "h" * limit})
                    elif where == "key":
                        broker.publish(topic, b"x", key="k" * limit)
                    else:
                        broker.publish_batch(topic, [b"ok"] * 10 + [b"y" * (limit + 1)] + [b"ok"])
                message = str(raised.value)
                assert str(limit) in message and "bytes" in message, message
                assert spy.calls == []
            finally:
                broker.backend = real
            marker = broker.publish(topic, b"marker")
            with broker.subscribe(topic, group) as sub:
                got = collect(sub, 1) + quiet(sub, 0.5)
            assert [d.id for d in got] == [marker], "nothing of a rejected call may be on the broker"
        finally:
            with contextlib.suppress(bridgeq.BridgeqError):
                broker.delete(topic)


def test_cli_bad_names_types_and_sizes_one_line_exit_2(real_url):
    topic = f"bq-cli-{uuid.uuid4().hex[:8]}"
    with bridgeq.connect(real_url) as broker:
        limit = broker.capabilities.max_message_size
    cases = [
        ["publish", real_url, "bad name"],
        ["publish", real_url, "a" * 121],
        ["publish", real_url, topic, "--header", "novalue"],
        ["publish", real_url, topic, "--header", "ce_id=x"],
        ["consume", real_url, topic, "--group", "bad/group", "--max", "1"],
        ["stats", real_url, "bad*topic", "--group", "g"],
        ["publish", real_url, topic, "--batch", "lots"],
        ["consume", real_url, topic, "--max", "1"],  # --group missing
    ]
    for args in cases:
        code, _, stderr = _cli(*args, stdin="one message\n")
        _one_line(stderr)
        assert code == 2, f"{args}: exit {code}"
    code, _, stderr = _cli("publish", real_url, topic, stdin="fine\n" + "x" * (limit + 1) + "\n")
    assert code == 2 and "bytes" in _one_line(stderr)
    with bridgeq.connect(real_url) as broker, contextlib.suppress(bridgeq.BridgeqError):
        broker.delete(topic)
