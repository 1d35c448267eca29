"""The backend contract: what a broker must do for bridgeq, and nothing more.

A backend translates; the core decides. Retries, dead letters, batching of
acks, iteration, ``run(handler)``, name and size checks and metrics live once in
the core. A backend is a :class:`Backend` subclass registered under its URL
scheme in the ``bridgeq.backends`` entry-point group, exactly as the built-in
ones are.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, NamedTuple

from bridgeq.capabilities import Capabilities
from bridgeq.errors import BridgeqError
from bridgeq.message import Delivery, Message
from bridgeq.options import NoOptions
from bridgeq.url import BrokerURL

__all__ = [
    "Backend",
    "BackendConsumer",
    "BrokerURL",
    "Capabilities",
    "Delivery",
    "ErrorTable",
    "Message",
    "Totals",
    "translate_errors",
]


class Totals(NamedTuple):
    """Running counts the broker keeps for a group, for rates: R and C over an interval."""

    published: int
    """Messages ever published to the topic (retained or not)."""
    settled: int
    """Messages of the topic this group has acked (or moved past)."""


class Backend(ABC):
    """One connection to one broker. Topic and group names arrive already checked.

    Every method may be called from any thread, concurrently: a backend is
    thread-safe. Errors are bridgeq errors (see :func:`translate_errors`).
    """

    options_type: ClassVar[type] = NoOptions
    """A frozen dataclass declaring the URL options (see :mod:`bridgeq.options`)."""

    capabilities: Capabilities
    """What this backend promises; may depend on the URL's options."""

    nonblocking: ClassVar[bool] = False
    """True when publish, ack, requeue and fetch(timeout=0) never wait on I/O, so the
    asyncio API may call them on the event loop instead of a worker thread."""

    def __init__(self, url: BrokerURL, options: object) -> None:  # noqa: B027 - a documented hook
        """Connect (or prepare to connect lazily). Raises ConfigError or ConnectionLost."""

    @abstractmethod
    def declare(self, topic: str, group: str | None) -> None:
        """Make the topic exist and, given a group, the group too: from now on it receives
        every message published to the topic. Idempotent; blocks until done."""

    @abstractmethod
    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Send the messages in order; return once the broker has accepted every one.

        Raises PublishError naming the messages not confirmed. The batch is not
        atomic: messages not named in the error were accepted.
        """

    def prepare_publish(self, topic: str) -> None:  # noqa: B027 - a documented hook
        """Get ready to publish to ``topic`` (which exists): whatever the first publish would set up first
        (a client, the topic's metadata) is set up now, so that publish's first batch is not slowed by it.
        A migration's publishing process calls it before it says it is ready. By default nothing."""

    def begin_publish(self, topic: str, messages: Sequence[Message]) -> Callable[[], None]:
        """Start :meth:`publish`; the function returned waits for the confirmations, raising as
        ``publish`` would. Batches begun one after the other are published in that order, so a
        caller may begin the next batch before the last is confirmed. By default the whole
        publish happens here; a backend whose client confirms asynchronously splits it."""
        self.publish(topic, messages)
        return _confirmed

    publishes_async: ClassVar[bool] = False
    """True when :meth:`publish_async` is implemented: the asyncio API then publishes on
    the event loop itself instead of a worker thread."""

    async def publish_async(self, topic: str, messages: Sequence[Message]) -> None:
        """:meth:`publish`, awaited on the running event loop without blocking it."""
        raise NotImplementedError(f"{type(self).__name__} does not publish through asyncio")

    async def close_async(self) -> None:  # noqa: B027 - a documented hook
        """Close what :meth:`publish_async` opened on the running loop; :meth:`close` follows."""

    @abstractmethod
    def consumer(self, topic: str, group: str, prefetch: int) -> BackendConsumer:
        """A new member of ``group`` reading ``topic``; the group is declared first."""

    @abstractmethod
    def depth(self, topic: str, group: str) -> int | None:
        """Messages waiting for the group, delivered-but-unacked included; None if unknown."""

    def totals(self, topic: str, group: str) -> Totals | None:
        """Running counts for rate estimates, or None where the broker cannot tell."""
        return None

    @abstractmethod
    def delete(self, topic: str) -> None:
        """Remove the topic, its groups and its messages. Idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent; consumers it made are closed first by the core."""


class BackendConsumer(ABC):
    """One member of a consumer group.

    The core never overlaps two calls on one consumer, but successive calls may
    come from different threads.
    """

    @abstractmethod
    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds for the first.

        Returns as soon as any are available; ``[]`` when the time ran out. Each
        delivery carries the backend's ``token`` and an ``attempt`` counting from 1.
        Raises ConnectionLost while the broker is unreachable: the core backs off and
        calls again, and the backend reconnects on that call.
        """

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle the deliveries for good: the group never receives them again."""

    def ack_and_fetch(
        self, acks: Sequence[Delivery], max_messages: int, timeout: float, ahead: int = 0
    ) -> list[Delivery]:
        """:meth:`ack` then :meth:`fetch`: acks made while another thread fetched go out with the next
        fetch. A backend that can send both in one round trip overrides this (optional).

        ``ahead``: the consumer may also ask the broker now for up to this many more, for the next
        call to return (that call may then return up to this many, even beyond its own
        ``max_messages``); the subscription keeps both within its prefetch. A backend that pipelines
        its requests uses it so the broker serves the next batch while this one is handled; one whose
        broker pushes ahead within prefetch (RabbitMQ) or whose client fetches ahead (Kafka) ignores it."""
        self.ack(acks)
        return self.fetch(max_messages, timeout)

    @abstractmethod
    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Make the deliveries deliverable again soon, to any member, with attempt + 1."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group; unsettled deliveries become deliverable to others. Idempotent."""


ErrorTable = Sequence[tuple[type[BaseException] | tuple[type[BaseException], ...], type[BridgeqError]]]


@contextlib.contextmanager
def translate_errors(table: ErrorTable, context: str) -> Iterator[None]:
    """Re-raise client exceptions as the first matching bridgeq error, ``from`` the original.

    ``context`` says what was being done ("publishing to orders"); the client's own
    message follows it. Bridgeq errors pass through unchanged.
    """
    try:
        yield
    except BridgeqError:
        raise
    except BaseException as exc:
        for client_error, bridgeq_error in table:
            if isinstance(exc, client_error):
                raise bridgeq_error(f"{context}: {type(exc).__name__}: {exc}") from exc
        raise


def _confirmed() -> None:
    """A publish that was confirmed before ``begin_publish`` returned."""
