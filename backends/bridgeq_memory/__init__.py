"""The in-memory reference backend: bridgeq's exact semantics, inside one process.

``memory://name`` is shared by every broker of this process that names it;
``memory://`` is private to one broker. Each group holds its own queue of
messages: a group receives what is published after it was declared (no
replay), and messages published while a topic has no group are dropped,
as with an AMQP fanout exchange.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bridgeq.errors import ConfigError
from bridgeq.options import option
from bridgeq.spi import Backend, BackendConsumer, BrokerURL, Capabilities, Delivery, Message, Totals

__all__ = ["MemoryBackend", "MemoryOptions"]


@dataclass(frozen=True)
class MemoryOptions:
    max_message_size: int = option(1 << 20, "largest message accepted, bytes")

    def __post_init__(self) -> None:
        if self.max_message_size < 1:
            raise ConfigError(f"option 'max_message_size' must be at least 1, got {self.max_message_size}")


class _Group:
    __slots__ = ("ready", "returned", "settled", "unacked")

    def __init__(self) -> None:
        self.ready: deque[Message | _Returned] = deque()  # fresh messages, or returned ones
        self.returned = 0  # how many of ready are _Returned
        self.unacked = 0
        self.settled = 0


class _Returned(NamedTuple):
    message: Message
    deliveries: int


class _Topic:
    def __init__(self) -> None:
        self.lock = threading.Condition(threading.Lock())
        self.groups: dict[str, _Group] = {}
        self.published = 0


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.topics: dict[str, _Topic] = {}

    def topic(self, name: str) -> _Topic:
        with self.lock:
            topic = self.topics.get(name)
            if topic is None:
                topic = self.topics[name] = _Topic()
            return topic


_named_stores: dict[str, _Store] = {}
_named_lock = threading.Lock()


class MemoryBackend(Backend):
    options_type = MemoryOptions
    nonblocking = True

    def __init__(self, url: BrokerURL, options: object) -> None:
        assert isinstance(options, MemoryOptions)
        name = ",".join(h.name for h in url.hosts) + url.path
        if name:
            with _named_lock:
                self._store = _named_stores.setdefault(name, _Store())
        else:
            self._store = _Store()
        self.capabilities = Capabilities(
            consumer_groups=True,
            persistent=False,
            replay=False,
            ordered_per_key=True,
            crash_redelivery=False,
            exact_delivery_count=True,
            depth=True,
            max_message_size=options.max_message_size,
            stable_foreign_ids=True,
        )

    def declare(self, topic: str, group: str | None) -> None:
        state = self._store.topic(topic)
        if group is not None:
            with state.lock:
                state.groups.setdefault(group, _Group())

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        state = self._store.topic(topic)
        with state.lock:
            state.published += len(messages)
            for group in state.groups.values():
                group.ready.extend(messages)
            state.lock.notify_all()

    def consumer(self, topic: str, group: str, prefetch: int) -> BackendConsumer:
        self.declare(topic, group)
        return MemoryConsumer(self._store.topic(topic), topic, group)

    def depth(self, topic: str, group: str) -> int | None:
        state = self._store.topic(topic)
        with state.lock:
            found = state.groups.get(group)
            return 0 if found is None else len(found.ready) + found.unacked

    def totals(self, topic: str, group: str) -> Totals | None:
        state = self._store.topic(topic)
        with state.lock:
            found = state.groups.get(group)
            return Totals(state.published, 0 if found is None else found.settled)

    def delete(self, topic: str) -> None:
        with self._store.lock:
            state = self._store.topics.pop(topic, None)
        if state is not None:
            with state.lock:
                state.groups.clear()
                state.lock.notify_all()

    def close(self) -> None:
        pass


class MemoryConsumer(BackendConsumer):
    def __init__(self, state: _Topic, topic: str, group: str) -> None:
        self._state = state
        self._topic = topic
        self._group_name = group
        self._held: dict[Delivery, None] = {}  # delivered, not settled, in order: goes back on close

    def _group(self) -> _Group:
        group = self._state.groups.get(self._group_name)
        if group is None:  # the topic was deleted under us: start afresh
            group = self._state.groups[self._group_name] = _Group()
        return group

    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        state = self._state
        with state.lock:
            group = self._group()
            if not group.ready and timeout > 0:
                state.lock.wait(timeout)
                group = self._group()
            ready = group.ready
            count = min(max_messages, len(ready))
            if not count:
                return []
            topic, name = self._topic, self._group_name
            items = [ready.popleft() for _ in range(count)]
            if group.returned:
                deliveries = [self._redeliver(group, item) for item in items]
            else:  # nothing returned waits: every item is a fresh Message
                fresh: list[Message] = items  # type: ignore[assignment]
                deliveries = [Delivery(m.id, m.body, m.headers, m.key, topic, name, 1) for m in fresh]
            self._held.update(dict.fromkeys(deliveries))
            group.unacked += count
            return deliveries

    def _redeliver(self, group: _Group, item: Message | _Returned) -> Delivery:
        if isinstance(item, _Returned):
            group.returned -= 1
            message, attempt = item.message, item.deliveries + 1
        else:
            message, attempt = item, 1
        return Delivery(message.id, message.body, message.headers, message.key, self._topic, self._group_name, attempt)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        pop = self._held.pop
        settled = sum(1 for d in deliveries if pop(d, d) is None)
        with self._state.lock:
            group = self._group()
            group.unacked -= settled
            group.settled += settled

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._state.lock:
            self._return([d for d in deliveries if d in self._held])

    def _return(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            del self._held[delivery]
        group = self._group()
        group.unacked -= len(deliveries)
        group.returned += len(deliveries)
        group.ready.extendleft(reversed([_Returned(d.to_message(), d.attempt) for d in deliveries]))
        self._state.lock.notify_all()

    def close(self) -> None:
        with self._state.lock:
            self._return(list(self._held))
