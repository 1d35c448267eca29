"""Brokers through testcontainers: skipped (or failed when required) without an engine, restartable with one.

tests/test_plugin.py covers Redis alone; here every broker backend, the one-line
reasons, the Kafka probe, and, when an engine answers, the restart command.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading

import pytest

import bridgeq
from bridgeq.testing import containers
from bridgeq.testing.targets import resolve_target

BROKERS = ("redis", "rabbitmq", "kafka")


@pytest.fixture
def no_engine(monkeypatch):
    """No env URL, no Docker engine, nothing required."""
    for backend in BROKERS:
        monkeypatch.delenv(f"BRIDGEQ_TEST_{backend.upper()}_URL", raising=False)
    monkeypatch.delenv("BRIDGEQ_TEST_REQUIRE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")


def _suite(pytester, *args):
    # A subprocess: the plugin caches resolved targets per process.
    return pytester.runpytest_subprocess(
        "--pyargs", "bridgeq.testing.cases", "--bridgeq-backends", ",".join(BROKERS),
        "-p", "no:cacheprovider", "-k", "empty_body", *args,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BROKERS)
def test_without_url_or_engine_the_reason_is_one_line(no_engine, backend):
    target = resolve_target(backend)
    assert target.url is None
    assert target.reason == (
        f"BRIDGEQ_TEST_{backend.upper()}_URL is not set and no Docker engine answers ({target.reason.split('(')[-1]}"
    )
    assert "\n" not in target.reason and len(target.reason) < 120


def test_every_broker_is_skipped_with_its_reason(no_engine, pytester):
    result = _suite(pytester, "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= len(BROKERS) and not outcomes.get("passed") and not outcomes.get("failed")
    assert result.ret == 0
    result.stdout.fnmatch_lines_random(
        [f"SKIPPED*{b}: BRIDGEQ_TEST_{b.upper()}_URL is not set and no Docker engine answers*" for b in BROKERS]
    )


def test_every_broker_fails_when_required(no_engine, pytester, monkeypatch):
    monkeypatch.setenv("BRIDGEQ_TEST_REQUIRE", "all")
    result = _suite(pytester)
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= len(BROKERS) and not outcomes.get("passed") and not outcomes.get("skipped")
    result.stdout.fnmatch_lines_random(
        [f"*{b}: required by BRIDGEQ_TEST_REQUIRE but unavailable: BRIDGEQ_TEST_{b.upper()}_URL*" for b in BROKERS]
    )


def test_image_is_a_setting_defaulting_to_the_official_one(monkeypatch):
    monkeypatch.delenv("BRIDGEQ_TEST_KAFKA_IMAGE", raising=False)
    assert containers.image("kafka") == "apache/kafka:4.4.0"
    monkeypatch.setenv("BRIDGEQ_TEST_KAFKA_IMAGE", "localhost/bridgeq/kafka:4.4.0-debian")
    assert containers.image("kafka") == "localhost/bridgeq/kafka:4.4.0-debian"


def test_kafka_is_advertised_at_the_hosts_port():
    settings = containers.kafka_settings("127.0.0.1", 40123)
    assert "PLAINTEXT://127.0.0.1:40123" in settings["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert settings["KAFKA_LISTENERS"].startswith("PLAINTEXT://:9092,")


def _metadata_reply(correlation: int, brokers: list[tuple[str, int]]) -> bytes:
    body = struct.pack(">iii", correlation, 0, len(brokers))
    for node, (host, port) in enumerate(brokers):
        body += struct.pack(">ih", node, len(host)) + host.encode() + struct.pack(">ih", port, -1)
    body += struct.pack(">hii", -1, 0, 0)  # cluster id (null), controller id, no topics
    return struct.pack(">i", len(body)) + body


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [([("127.0.0.1", 0)], True), ([("localhost", 9092)], False), ([], False)],
    ids=["lists-itself", "advertises-elsewhere", "no-broker-yet"],
)
def test_the_kafka_probe_wants_the_broker_at_the_address_it_dialled(brokers, expected):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        brokers = [(h, port if p == 0 else p) for h, p in brokers]

        def answer():
            conn, _ = server.accept()
            with conn:
                size = struct.unpack(">i", conn.recv(4))[0]
                request = conn.recv(size)
                api_key, version, correlation = struct.unpack_from(">hhi", request)
                assert (api_key, version) == (3, 4)
                conn.sendall(_metadata_reply(correlation, brokers))

        thread = threading.Thread(target=answer)
        thread.start()
        assert containers._kafka_lists_itself("127.0.0.1", port) is expected
        thread.join(5)


@pytest.fixture(scope="module")
def engine():
    ok, why = containers.engine_answers()
    if not ok:
        pytest.skip(why)


def test_an_image_that_cannot_be_had_is_a_one_line_reason(engine, monkeypatch):
    monkeypatch.setenv("BRIDGEQ_TEST_REDIS_IMAGE", "localhost/bridgeq/absent:0")
    target = containers.start("redis")
    assert target.url is None
    assert target.reason.startswith("BRIDGEQ_TEST_REDIS_URL is not set and localhost/bridgeq/absent:0 did not start: ")
    assert "\n" not in target.reason


@pytest.mark.parametrize("backend", BROKERS)
def test_the_restart_command_keeps_the_data_and_the_address(engine, backend, monkeypatch):
    monkeypatch.delenv(f"BRIDGEQ_TEST_RESTART_{backend.upper()}", raising=False)
    target = containers.start(backend)
    assert target.url, target.reason
    command = os.environ[f"BRIDGEQ_TEST_RESTART_{backend.upper()}"]
    with bridgeq.connect(target.url) as broker:
        broker.declare("restart-t", "restart-g")
        sent = broker.publish("restart-t", b"kept")
    subprocess.run(command, shell=True, check=True, timeout=180)
    with bridgeq.connect(target.url) as broker, broker.subscribe("restart-t", "restart-g") as sub:
        got = sub.receive(timeout=30)
        assert got is not None and (got.id, got.body) == (sent, b"kept")
        got.ack()
