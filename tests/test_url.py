"""URLs: parse, render and parse again; passwords never shown; every failure a ConfigError."""

from __future__ import annotations

import pytest

import bridgeq
from bridgeq.url import BrokerURL, Host, parse, resolve

SHAPES = [
    "memory://",
    "memory://shared",
    "redis://localhost",
    "redis://localhost:6379",
    "redis://localhost:6379/0",
    "redis://:secret@localhost:6379/2",
    "redis://user:secret@localhost:6379/2?claim_idle_ms=2000",
    "rediss://user:s%40cr%2Ft@cache.example.com:6380/0",
    "amqp://guest:guest@127.0.0.1:5672/%2F",
    "amqp://guest:guest@127.0.0.1:5672/vhost?prefetch=10&heartbeat=30",
    "amqps://u:p@mq.example.com/prod",
    "kafka://h1:9092,h2:9092,h3:9092",
    "kafka://h1:9092?acks=all&security_protocol=SASL_SSL&sasl_mechanism=PLAIN",
    "kafka://user:pw@h1:9092,h2:9093?security_protocol=SASL_PLAINTEXT",
    "redis://[::1]:6379/0",
    "kafka://[::1]:9092,[fe80::1]:9093",
    "redis://127.0.0.1",
    "amqp://guest@localhost",
    "amqp://:only-password@localhost",
    "redis://localhost/0?maxlen=1000&minid=",
    "memory://a.b-c_d",
    "kafka://broker-1.internal:19092",
    "redis://user:p%3Aw%3Ad@localhost:1/15",
    "amqp://user:%F0%9F%94%91@localhost/v",
    "redis://localhost:65535",
]


@pytest.mark.parametrize("text", SHAPES)
def test_parse_render_parse_round_trips(text):
    url = parse(text)
    assert parse(url.render(hide_password=False)) == url


@pytest.mark.parametrize("text", [s for s in SHAPES if ":" in s.split("://")[1].split("@")[0] and "@" in s])
def test_password_is_hidden_in_str_and_repr(text):
    url = parse(text)
    assert url.password
    for shown in (str(url), repr(url), url.render()):
        assert f":{url.password}@" not in shown
        assert ":***@" in shown


def test_parts():
    url = parse("kafka://u:p@h1:9092,[::1]:9093/x?acks=all")
    assert url == BrokerURL("kafka", "u", "p", (Host("h1", 9092), Host("::1", 9093)), "x", (("acks", "all"),))
    assert url.options == {"acks": "all"}


BAD = [
    "",
    "localhost:6379",
    "://localhost",
    "1redis://x",
    "redis://host:port",
    "redis://host:0",
    "redis://host:70000",
    "redis://host:-1",
    "redis://host:6379:1",
    "redis://h1,,h2",
    "redis://ho st",
    "redis://host\n",
    "redis://host#frag",
    "redis://[::1",
    "redis://[::1]x",
    "redis://host?a",
    "redis://h$st",
    "redis://host:6379\u00b2",  # str.isdigit() says yes, int() says no
    "redis://host:\u0663",  # an Arabic-Indic digit: int() reads it, a port it is not
]


@pytest.mark.parametrize("text", BAD)
def test_malformed_urls_are_config_errors(text):
    with pytest.raises(bridgeq.ConfigError):
        parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "redis://user:hunter2-secret@host:badport",
        "redis://user:hunter2-secret@h1,,h2",
        "redis://user:hunter2-secret@host#x",
        "redis://user:hunter2/secret@host",
        "redis://user:hunter2?secret@host",
        "redis://user:hunter2 secret@host",
    ],
)
def test_errors_never_echo_the_password(text):
    with pytest.raises(bridgeq.BridgeqError) as raised:
        bridgeq.connect(text)
    assert "hunter2" not in str(raised.value)
    assert "hunter2" not in repr(raised.value)


def test_none_means_env_then_memory(monkeypatch):
    monkeypatch.delenv("BRIDGEQ_URL", raising=False)
    assert resolve(None).scheme == "memory"
    monkeypatch.setenv("BRIDGEQ_URL", "memory://from-env")
    assert resolve(None).hosts == (Host("from-env", None),)
    with bridgeq.connect() as broker:
        assert str(broker.url) == "memory://from-env"
