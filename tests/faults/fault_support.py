"""Helpers of the fault tests: broker URLs, a spy on what reaches a backend, closed ports, captured logs."""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import bridgeq
from bridgeq.testing.targets import url_or_skip

BACKENDS = ("memory", "redis", "rabbitmq", "kafka")
REAL = ("redis", "rabbitmq", "kafka")

SENT = frozenset({"declare", "publish", "consumer", "depth", "totals", "delete"})
"""Backend methods that reach the broker."""


def url_of(backend: str) -> str:
    """The test broker for ``backend``: skipped when missing, failed when required."""
    if backend == "memory":
        return f"memory://faults-{uuid.uuid4().hex[:6]}"
    return url_or_skip(backend)


class Spy:
    """Stands in for a broker's backend and records every call that would reach the broker."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._backend, name)
        if name in SENT and callable(attribute):

            def recorded(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return recorded
        return attribute


@contextlib.contextmanager
def spied(url: str) -> Iterator[tuple[bridgeq.Broker, Spy]]:
    """A connected broker whose backend is a :class:`Spy`."""
    with bridgeq.connect(url) as broker:
        spy = Spy(broker.backend)
        broker.backend = spy  # type: ignore[assignment]
        try:
            yield broker, spy
        finally:
            broker.backend = spy._backend


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Captured(logging.Handler):
    """Every log record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception as exc:
            self.lines.append(f"unformattable record {record.name}: {record.msg!r} {record.args!r}: {exc!r}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
