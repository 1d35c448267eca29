"""Fixtures for the RabbitMQ backend's own tests: a real server from BRIDGEQ_TEST_RABBITMQ_URL.

Unset: every test here that needs a server skips, unless BRIDGEQ_TEST_REQUIRE names rabbitmq
(or is ``all``): then it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import pika
import pytest

import bridgeq
from bridgeq.url import parse


def _required() -> bool:
    wanted = {p.strip().lower() for p in os.environ.get("BRIDGEQ_TEST_REQUIRE", "").split(",")}
    return bool(wanted & {"all", "rabbitmq"})


def with_options(url: str, **options: object) -> str:
    """``url`` with ``options`` added to (or replacing those in) its query string."""
    base, _, query = url.partition("?")
    merged = dict(parse_qsl(query, keep_blank_values=True))
    merged.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()})
    return base + "?" + "&".join(f"{k}={v}" for k, v in merged.items())


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    url = os.environ.get("BRIDGEQ_TEST_RABBITMQ_URL")
    if not url:
        if _required():
            pytest.fail("BRIDGEQ_TEST_REQUIRE names rabbitmq but BRIDGEQ_TEST_RABBITMQ_URL is not set")
        pytest.skip("BRIDGEQ_TEST_RABBITMQ_URL is not set")
    return url


def raw_parameters(url: str) -> pika.ConnectionParameters:
    u = parse(url)
    return pika.ConnectionParameters(
        host=u.hosts[0].name,
        port=u.hosts[0].port or 5672,
        virtual_host=u.path or "/",
        credentials=pika.PlainCredentials(u.username or "guest", u.password or "guest"),
    )


@pytest.fixture
def url_with(rabbitmq_url: str) -> Callable[..., str]:
    """The test URL with some options set: ``url_with(heartbeat=2)``."""
    return lambda **options: with_options(rabbitmq_url, **options)


@pytest.fixture
def raw(rabbitmq_url: str) -> Iterator[Any]:
    """A plain pika channel (BlockingConnection) on the same server and vhost."""
    connection = pika.BlockingConnection(raw_parameters(rabbitmq_url))
    yield connection.channel()
    connection.close()


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[bridgeq.Broker]:
    with bridgeq.connect(rabbitmq_url) as connected:
        yield connected


@pytest.fixture
def topic(rabbitmq_url: str) -> Iterator[str]:
    """A fresh topic name; it and its dead-letter topic are deleted afterwards."""
    name = f"bq-rmq-test-{uuid.uuid4().hex[:10]}"
    yield name
    with bridgeq.connect(rabbitmq_url) as cleaner:
        for made in (name, f"{name}.g.dlq"):
            cleaner.delete(made)
