"""A subscription: one member of a consumer group, read in pull or callback style.

The core does, once for every backend: prefetch accounting, batching of
acks, redelivery limits and dead letters, iteration, ``run(handler)`` and a
``close()`` that may come from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bridgeq import wire
from bridgeq.errors import BridgeqError, ClosedError, ConnectionLost, DeliveryStateError
from bridgeq.message import ACKED, DEAD_LETTERED, PENDING, REQUEUED, SETTLED, Delivery, Settled, Settlement
from bridgeq.settle import flusher
from bridgeq.spi import BackendConsumer

if TYPE_CHECKING:
    from bridgeq.api import Broker

log = logging.getLogger("bridgeq")

FETCH_SLICE = 0.1
"""Longest single wait inside the backend, so close() from another thread is prompt."""

RECONNECT_PATIENCE = 120.0
"""How long a subscription keeps retrying an unreachable broker before raising ConnectionLost."""

Handler = Callable[[Delivery], Any]


class Subscription:
    """One member of ``group`` on ``topic``. Read it from one thread; ack and close from any."""

    def __init__(
        self,
        broker: Broker,
        consumer: BackendConsumer,
        topic: str,
        group: str,
        *,
        prefetch: int,
        max_deliveries: int | None,
        dead_letter_topic: str,
        ack_batch: int,
        read_ahead: bool = False,
    ) -> None:
        self.topic = topic
        self.group = group
        self.prefetch = prefetch
        self.max_deliveries = max_deliveries
        self.dead_letter_topic = dead_letter_topic
        self._broker = broker
        self._consumer = consumer
        self._ack_batch = ack_batch
        self._read_ahead = read_ahead
        self._asked_ahead = 0  # the consumer may have asked for this many more for the next fetch
        self._io = threading.RLock()  # serialises every call on the backend consumer
        self._state = threading.Lock()  # guards what follows
        self._room = threading.Condition(self._state)  # signalled when an ack frees prefetch room
        self._room_wanted = False  # a reader waits for an ack to make room under prefetch
        self._acks: list[Delivery] = []  # acked, not yet sent
        self._pending: list[tuple[Delivery, Settlement, str]] = []  # requeues and dead letters, not yet sent
        self._outstanding = 0  # fetched and not yet settled, buffered ones included
        self._buffer: deque[Delivery] = deque()
        self._closed = False
        self._dead_letter_declared = False
        self._outage: float | None = None  # when the broker became unreachable, while it is
        self.flush_soon: Callable[[], object] | None = None
        flusher.start()
        """When set (the asyncio API sets it), called instead of flushing on the acking thread."""

    # -- reading ---------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None once ``timeout`` seconds passed or the subscription closed."""
        if not self._buffer:
            self._fill(1, timeout)
        try:
            return self._buffer.popleft()
        except IndexError:
            return None

    def receive_batch(self, max_messages: int, timeout: float | None = None) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits at most ``timeout`` for the first one."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if not self._buffer:
            self._fill(max_messages, timeout)
        buffer = self._buffer
        if len(buffer) <= max_messages:
            batch = list(buffer)
            buffer.clear()
            return batch
        return [buffer.popleft() for _ in range(max_messages)]

    def take_buffered(self, max_messages: int) -> list[Delivery]:
        """Deliveries already fetched, without waiting or touching the broker."""
        buffer = self._buffer
        return [buffer.popleft() for _ in range(min(max_messages, len(buffer)))]

    def unreceive(self, deliveries: list[Delivery]) -> None:
        """Put deliveries that never reached the application back at the head of the line."""
        with self._state:
            if self._closed:
                for delivery in deliveries:
                    if delivery.state is PENDING:
                        delivery.state = REQUEUED
                        self._record(delivery, REQUEUED, "not handed to the application")
                return
            self._buffer.extendleft(reversed(deliveries))
        if self._closed:
            self.flush_if_idle()

    def __iter__(self) -> Iterator[Delivery]:
        """Deliveries until the subscription is closed."""
        while True:
            delivery = self.receive()
            if delivery is None:
                return
            yield delivery

    def run(self, handler: Handler, stop_after: int | None = None, idle_timeout: float | None = None) -> int:
        """Call ``handler`` for each delivery: ack on return, nack (requeue) on raise.

        Returns the number handled once ``stop_after`` were handled, nothing arrived
        for ``idle_timeout`` seconds, or the subscription was closed. A handler may
        settle the delivery itself.
        """
        handled = 0
        while stop_after is None or handled < stop_after:
            want = self.prefetch if stop_after is None else min(self.prefetch, stop_after - handled)
            batch = self.receive_batch(want, timeout=idle_timeout)
            if not batch:
                return handled
            for delivery in batch:
                try:
                    handler(delivery)
                except Exception as exc:
                    log.warning("handler failed on %s: %r", delivery.id, exc, exc_info=True)
                    if delivery.state is PENDING:
                        delivery.nack(requeue=True, reason=f"{type(exc).__name__}: {exc}")
                except BaseException:
                    self._settle_quietly(delivery, REQUEUED, "handler interrupted")
                    raise
                else:
                    if delivery.state is PENDING:
                        delivery.ack()
                handled += 1
        return handled

    def _fill(self, want: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while not self._closed:
            remaining = FETCH_SLICE if deadline is None else deadline - time.monotonic()
            room = 0
            lost: ConnectionLost | None = None
            with self._io:
                if self._closed:
                    return
                try:
                    acks = self._acks_to_send()
                    room = self.prefetch - self._outstanding
                    if room > 0:
                        wait = min(FETCH_SLICE, max(remaining, 0.0))
                        asked = min(want, room)
                        if self._read_ahead:  # this fetch may return the last one's read-ahead
                            ahead = max(0, min(want, room - max(asked, self._asked_ahead)))
                            fetched = self._consumer.ack_and_fetch(acks, asked, wait, ahead)
                            self._asked_ahead = ahead
                            self._count_acked(acks)
                        elif acks:
                            fetched = self._consumer.ack_and_fetch(acks, asked, wait)
                            self._count_acked(acks)
                        else:
                            fetched = self._consumer.fetch(asked, wait)
                        if self._take(fetched):
                            self._outage = None
                            return
                    elif acks:
                        self._consumer.ack(acks)
                        self._count_acked(acks)
                    self._outage = None
                except ConnectionLost as exc:
                    lost = exc
            if lost is not None:
                left = None if deadline is None else deadline - time.monotonic()
                self._wait_for_broker(lost, left)  # outside the lock: close() stays prompt
                if deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            if room <= 0:
                with self._state:  # at the prefetch limit: wait for an ack to make room
                    if self._outstanding >= self.prefetch and not self._closed:
                        self._room_wanted = True
                        self._room.wait(min(FETCH_SLICE, max(remaining, 0.0)))
                        self._room_wanted = False
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _wait_for_broker(self, exc: ConnectionLost, left: float | None) -> None:
        """The broker is unreachable: back off (at most ``left`` seconds) and let the backend reconnect.

        The outage is timed across calls: after RECONNECT_PATIENCE it raises ConnectionLost.
        """
        now = time.monotonic()
        if self._outage is None:
            self._outage = now
            log.warning("lost %s/%s, reconnecting: %s", self.topic, self.group, exc)
        elif now - self._outage > RECONNECT_PATIENCE:
            raise ConnectionLost(f"{self.topic}/{self.group}: broker unreachable for {now - self._outage:.0f} s: {exc}")
        pause = min(0.05 * 2 ** min(int(now - self._outage), 6), 2.0)
        time.sleep(pause if left is None else max(0.0, min(pause, left)))

    def _take(self, deliveries: list[Delivery]) -> bool:
        """Buffer fresh deliveries; dead-letter those past max_deliveries. True if any kept."""
        if not deliveries:
            return False
        for delivery in deliveries:
            delivery.settler = self
        limit = self.max_deliveries
        with self._state:
            self._outstanding += len(deliveries)
            if limit is not None and any(d.attempt > limit for d in deliveries):
                for delivery in [d for d in deliveries if d.attempt > limit]:
                    delivery.state = DEAD_LETTERED
                    self._record(delivery, DEAD_LETTERED, f"max_deliveries ({limit}) exceeded")
                deliveries = [d for d in deliveries if d.attempt <= limit]
            self._buffer.extend(deliveries)
        return bool(deliveries)

    # -- settling --------------------------------------------------------------------------

    def ack_one(self, delivery: Delivery) -> None:
        """The hot path of ``delivery.ack()``; anything unusual goes through :meth:`settle`."""
        with self._state:
            if delivery.state is PENDING and not self._closed:
                delivery.state = ACKED
                acks = self._acks
                acks.append(delivery)
                self._outstanding -= 1
                if self._room_wanted:
                    self._room.notify()
                waiting = len(acks)
            else:
                waiting = -1
        if waiting < 0:
            self.settle(delivery, ACKED, "")
        elif waiting >= self._ack_batch:
            self._flush_full()
        elif waiting == 1:
            flusher.register(self)

    def settle(self, delivery: Delivery, outcome: Settlement, reason: str) -> None:
        """Record ``delivery``'s settlement; sent in a batch soon (see :mod:`bridgeq.settle`)."""
        with self._state:
            if delivery.state is not PENDING:
                if delivery.state is outcome:
                    return
                raise DeliveryStateError(
                    f"delivery {delivery.id!r} is already {delivery.state.value}; cannot mark it {outcome.value}"
                )
            if self._closed:
                raise ClosedError(
                    f"subscription to {self.topic!r} as {self.group!r} is closed; "
                    f"delivery {delivery.id!r} will be delivered again"
                )
            delivery.state = outcome
            limit = self.max_deliveries
            if outcome is REQUEUED and limit is not None and delivery.attempt >= limit:
                outcome = DEAD_LETTERED
                reason = f"max_deliveries ({limit}) reached: {reason}"
            if outcome is ACKED:
                self._acks.append(delivery)
            else:
                self._pending.append((delivery, outcome, reason))
            self._outstanding -= 1
            if self._room_wanted:
                self._room.notify()
            waiting = len(self._acks) + len(self._pending)
        if waiting >= self._ack_batch:
            self._flush_full()
        elif waiting == 1:
            flusher.register(self)

    def ack(self, deliveries: Iterable[Delivery]) -> Settled:
        """Ack many deliveries at once: the same as ``d.ack()`` for each, with one lock round."""
        self._settle_many(deliveries, ACKED, "")
        return SETTLED

    def nack(self, deliveries: Iterable[Delivery], requeue: bool = True, reason: str = "nacked") -> Settled:
        """Nack many deliveries at once: the same as ``d.nack(requeue)`` for each."""
        self._settle_many(deliveries, REQUEUED if requeue else DEAD_LETTERED, reason)
        return SETTLED

    def _settle_many(self, deliveries: Iterable[Delivery], outcome: Settlement, reason: str) -> None:
        batch = list(deliveries)
        if any(d.settler is not self for d in batch):
            raise DeliveryStateError("ack()/nack() of a subscription take only its own deliveries")
        with self._state:
            fast = not self._closed and outcome is ACKED
            if fast and all(d.state is PENDING for d in batch):
                for delivery in batch:
                    delivery.state = outcome
                self._acks.extend(batch)
                self._outstanding -= len(batch)
                if self._room_wanted:
                    self._room.notify()
                waiting = len(self._acks) + len(self._pending)
            else:
                waiting = -1
        if waiting < 0:  # the careful path: per delivery, with its errors
            for delivery in batch:
                delivery._settle(outcome, reason)
        elif waiting >= self._ack_batch:
            self._flush_full()
        elif waiting == len(batch):
            flusher.register(self)

    def _flush_full(self) -> None:
        if self.flush_soon is not None:
            self.flush_soon()
        else:
            self.flush_if_idle()

    def _record(self, delivery: Delivery, action: Settlement, reason: str) -> None:
        self._pending.append((delivery, action, reason))
        self._outstanding -= 1

    def _settle_quietly(self, delivery: Delivery, outcome: Settlement, reason: str) -> None:
        try:
            if delivery.state is PENDING:
                self.settle(delivery, outcome, reason)
        except (ClosedError, DeliveryStateError):
            pass

    def flush_if_idle(self) -> bool:
        """Send waiting settlements unless another thread is using the consumer."""
        if not self._io.acquire(blocking=False):
            return False
        try:
            self.flush()
        except Exception:
            log.warning("sending acks for %s/%s failed; redelivery follows", self.topic, self.group, exc_info=True)
        finally:
            self._io.release()
        return not (self._acks or self._pending)

    def _acks_to_send(self) -> list[Delivery]:
        """The acks recorded, to go out with the next fetch (one round trip where the backend can); with
        requeues or dead letters recorded too, everything is sent now instead, in flush()'s order."""
        with self._state:
            if not self._pending:
                acks, self._acks = self._acks, []
                return acks
        self.flush()
        return []

    def _count_acked(self, acks: list[Delivery]) -> None:
        if acks:
            self._broker.meter.count_acked(self.topic, self.group, len(acks))

    def flush(self) -> None:
        """Send every recorded ack, requeue and dead letter to the broker now."""
        with self._io:
            with self._state:
                if not (self._acks or self._pending):
                    return
                acks, self._acks = self._acks, []
                pending, self._pending = self._pending, []
            requeues = [d for d, action, _ in pending if action is REQUEUED]
            dead = [(d, reason) for d, action, reason in pending if action is DEAD_LETTERED]
            if dead:
                self._dead_letter(dead)
                acks.extend(d for d, _ in dead)
            if acks:
                self._consumer.ack(acks)
                self._count_acked(acks)
            if requeues:
                self._consumer.requeue(requeues)

    def _dead_letter(self, dead: list[tuple[Delivery, str]]) -> None:
        """Publish to the dead-letter topic; the caller acks the originals only after that."""
        messages = []
        for delivery, reason in dead:
            headers = dict(delivery.headers)
            headers[wire.DEAD_LETTER_REASON] = reason
            headers[wire.DEAD_LETTER_ATTEMPTS] = str(delivery.attempt)
            headers[wire.DEAD_LETTER_TOPIC] = self.topic
            headers[wire.DEAD_LETTER_GROUP] = self.group
            messages.append(delivery.to_message(headers))
        if not self._dead_letter_declared:
            self._broker.backend.declare(self.dead_letter_topic, self.group)
            self._dead_letter_declared = True
        self._broker.backend.publish(self.dead_letter_topic, messages)
        log.info("dead-lettered %d message(s) from %s/%s", len(messages), self.topic, self.group)

    # -- closing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Leave the group: deliveries not acked become deliverable again. Idempotent, any thread."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()
        with self._io:  # waits for a fetch in progress (at most FETCH_SLICE)
            with self._state:
                while self._buffer:  # fetched, never handed to the application
                    delivery = self._buffer.popleft()
                    delivery.state = REQUEUED
                    self._record(delivery, REQUEUED, "subscription closed")
            try:
                self.flush()
            except BridgeqError as exc:  # unsent acks only mean those messages come again
                log.warning(
                    "closing %s/%s: last acks not sent (%s); they will be redelivered", self.topic, self.group, exc
                )
            finally:
                try:
                    self._consumer.close()
                finally:
                    self._broker.forget(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Subscription {self.topic!r} group={self.group!r} prefetch={self.prefetch} {state}>"
