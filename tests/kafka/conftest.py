"""Fixtures for the Kafka backend's own tests: a real broker from BRIDGEQ_TEST_KAFKA_URL.

Unset: every broker test here skips, unless BRIDGEQ_TEST_REQUIRE names kafka (or
is ``all``): then it fails. The ledger and option tests need no broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import bridgeq
from bridgeq.testing.targets import url_or_skip


@pytest.fixture(scope="session")
def kafka_url() -> str:
    return url_or_skip("kafka")


@pytest.fixture
def broker(kafka_url: str) -> Iterator[bridgeq.Broker]:
    with bridgeq.connect(kafka_url) as connected:
        yield connected


@pytest.fixture
def topic(kafka_url: str) -> Iterator[str]:
    """A fresh topic name; the topic (and group g's dead letters) are deleted afterwards."""
    name = f"bq-kafka-test-{uuid.uuid4().hex[:10]}"
    yield name
    with bridgeq.connect(kafka_url) as cleanup:
        cleanup.delete(name)
        cleanup.delete(f"{name}.g.dlq")


@pytest.fixture
def settings(broker: bridgeq.Broker) -> dict[str, Any]:
    """kafka-python settings for raw clients of the same broker."""
    backend: Any = broker.backend
    return backend.client_settings()
