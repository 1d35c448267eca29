"""Fixtures for the RabbitMQ backend's own tests: a real server from BRIDGEQ_TEST_RABBITMQ_URL.

Unset: every test here that needs a server skips, unless BRIDGEQ_TEST_REQUIRE names rabbitmq
(or is ``all``): then it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

import bridgeq
from bridgeq.testing.targets import url_or_skip, with_options
from bridgeq.url import parse


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return url_or_skip("rabbitmq")


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
