"""The in-memory reference backend: bridgeq's exact semantics, inside one process.

``memory://name`` is shared by every broker of this process that names it;
``memory://`` is private to one broker. Each group holds its own queue of
messages: a group receives what is published after it was declared (no
replay), and messages published while a topic has no group are dropped,
as with an AMQP fanout exchange.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from bridgeq.spi import Backend, BackendConsumer, BrokerURL, Capabilities, Delivery, Message, Totals
from bridgeq.options import option

__all__ = ["MemoryBackend", "MemoryOptions"]


@dataclass(frozen=True)
class MemoryOptions:
    max_message_size: int = option(1 << 20, "largest message accepted, bytes")


class _Group:
    __slots__ = ("ready", "unacked", "settled")

    def __init__(self) -> None:
        self.ready: deque[list] = deque()  # [message, deliveries so far]
        self.unacked: dict[int, list] = {}
        self.settled = 0


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
_tokens = itertools.count(1)


class MemoryBackend(Backend):
    options_type = MemoryOptions

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
                group.ready.extend([message, 0] for message in messages)
            state.lock.notify_all()

    def consumer(self, topic: str, group: str, prefetch: int) -> BackendConsumer:
        self.declare(topic, group)
        return MemoryConsumer(self._store.topic(topic), topic, group)

    def depth(self, topic: str, group: str) -> int | None:
        state = self._store.topic(topic)
        with state.lock:
            found = state.groups.get(group)
            return 0 if found is None else len(found.ready) + len(found.unacked)

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
        self._held: set[int] = set()

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
            topic, name, unacked, held = self._topic, self._group_name, group.unacked, self._held
            deliveries = []
            for _ in range(count):
                entry = ready.popleft()
                entry[1] += 1
                token = next(_tokens)
                unacked[token] = entry
                held.add(token)
                message = entry[0]
                deliveries.append(
                    Delivery(message.id, message.body, message.headers, message.key, topic, name, entry[1], token)
                )
            return deliveries

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._state.lock:
            group = self._group()
            for delivery in deliveries:
                if group.unacked.pop(delivery.token, None) is not None:
                    group.settled += 1
                self._held.discard(delivery.token)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._state.lock:
            self._return(self._group(), [d.token for d in deliveries])

    def _return(self, group: _Group, tokens: list[int]) -> None:
        entries = [group.unacked.pop(token, None) for token in tokens]
        self._held.difference_update(tokens)
        group.ready.extendleft(reversed([entry for entry in entries if entry is not None]))
        self._state.lock.notify_all()

    def close(self) -> None:
        with self._state.lock:
            self._return(self._group(), sorted(self._held))
