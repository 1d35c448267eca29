"""The post-hoc checker of fault runs, and the publishers and readers that feed it.

A fault run records three things (a :class:`Tally`, safe to share between threads):
what the publishers sent, in order, with each message's key; which ids the
broker confirmed; which ids the consumers received, in arrival order. Then
:meth:`Tally.verdict` (or :func:`check` on ids read back from anywhere, e.g. a
killed process's output) says

- **lost**: confirmed, never received (at-least-once: must be none);
- **duplicated**: deliveries beyond the first of each id (allowed, counted);
- **out of order**: per key, messages first received after a later message of
  the same key (counted; only a broker that promises ``ordered_per_key`` to a
  single consumer can be held to zero);
- **unknown**: received, never published (must be none).

:func:`publish_confirmed` publishes at-least-once the way an application should:
a batch that raised ``ConnectionLost`` is sent again whole, and the messages a
``PublishError`` names are sent again, with the same ids, until all are confirmed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import bridgeq
from bridgeq.errors import BridgeqError, ClosedError, ConfigError, ConnectionLost, PublishError
from bridgeq.message import Delivery, Message

EXPECTED_PUBLISH_ERRORS = (ConnectionLost, PublishError)
"""What a publish may raise while the broker restarts or the network fails: retrying is right."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one fault run (see the module docstring)."""

    published: int
    confirmed: int
    received: int
    unique: int
    lost: tuple[str, ...]
    duplicated: int
    out_of_order: int
    unknown: tuple[str, ...]
    errors: Mapping[str, int] = field(default_factory=dict)
    """Errors seen along the way, by ``where: type``; expected ones included."""

    @property
    def ok(self) -> bool:
        """Nothing confirmed was lost, and nothing arrived that was never published."""
        return not self.lost and not self.unknown

    def row(self) -> dict[str, int]:
        return {
            "published": self.published,
            "confirmed": self.confirmed,
            "received": self.received,
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "unknown": len(self.unknown),
        }

    def __str__(self) -> str:
        text = ", ".join(f"{name} {value}" for name, value in self.row().items())
        if self.lost:
            text += f"; first lost: {list(self.lost[:5])}"
        if self.unknown:
            text += f"; first unknown: {list(self.unknown[:5])}"
        if self.errors:
            text += "; errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items()))
        return text


def check(
    confirmed: Iterable[str],
    received: Iterable[str],
    *,
    published: Iterable[str] | None = None,
    order: Mapping[str, Sequence[str]] | None = None,
    errors: Mapping[str, int] | None = None,
) -> Verdict:
    """Judge a run from ids alone.

    ``confirmed``: ids whose publish returned; ``received``: ids as the consumers got
    them, in arrival order, repeats included; ``published``: every id ever sent
    (default: the confirmed ones); ``order``: per key, the ids in publish order.
    """
    confirmed_set = set(confirmed)
    arrivals = list(received)
    counts = Counter(arrivals)
    sent = set(published) if published is not None else set(confirmed_set)
    sent |= confirmed_set
    lost = tuple(sorted(confirmed_set - counts.keys()))
    unknown = tuple(sorted(counts.keys() - sent))
    first: dict[str, int] = {}
    for position, mid in enumerate(arrivals):
        first.setdefault(mid, position)
    out_of_order = 0
    for ids in (order or {}).values():
        latest = -1
        for mid in ids:
            if mid not in first:
                continue
            if first[mid] < latest:
                out_of_order += 1
            else:
                latest = first[mid]
    return Verdict(
        published=len(sent),
        confirmed=len(confirmed_set),
        received=len(arrivals),
        unique=len(counts),
        lost=lost,
        duplicated=len(arrivals) - len(counts),
        out_of_order=out_of_order,
        unknown=unknown,
        errors=dict(errors or {}),
    )


class Tally:
    """What publishers sent and had confirmed and what consumers received. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, str | None] = {}  # id -> key, in first-send order
        self._confirmed: set[str] = set()
        self._received: list[str] = []
        self.errors: Counter[str] = Counter()
        self.unexpected: list[str] = []
        """Errors of a kind the run should not see (not ConnectionLost/PublishError), as text."""

    def sent(self, messages: Iterable[Message]) -> None:
        with self._lock:
            for message in messages:
                self._sent.setdefault(message.id, message.key)

    def confirm(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._confirmed.update(ids)

    def receive(self, deliveries: Iterable[Delivery]) -> None:
        with self._lock:
            self._received.extend(d.id for d in deliveries)

    def error(self, where: str, exc: BaseException, expected: bool) -> None:
        with self._lock:
            self.errors[f"{where}: {type(exc).__name__}"] += 1
            if not expected:
                self.unexpected.append(f"{where}: {type(exc).__name__}: {exc}"[:300])

    @property
    def confirmed(self) -> int:
        with self._lock:
            return len(self._confirmed)

    @property
    def received_ids(self) -> set[str]:
        with self._lock:
            return set(self._received)

    def confirmed_ids(self) -> set[str]:
        with self._lock:
            return set(self._confirmed)

    def has_all_confirmed(self) -> bool:
        """True once every confirmed id was received at least once."""
        with self._lock:
            return self._confirmed.issubset(self._received_set())

    def _received_set(self) -> set[str]:
        return set(self._received)

    def verdict(self) -> Verdict:
        with self._lock:
            order: dict[str, list[str]] = {}
            for mid, key in self._sent.items():
                if key is not None:
                    order.setdefault(key, []).append(mid)
            return check(
                self._confirmed,
                self._received,
                published=self._sent,
                order=order,
                errors=self.errors,
            )


def publish_confirmed(
    broker: bridgeq.Broker,
    topic: str,
    messages: Sequence[Message],
    tally: Tally,
    *,
    deadline: float,
    where: str = "publish",
) -> bool:
    """Publish ``messages`` until every one is confirmed (at-least-once, same ids); False if ``deadline``
    (a ``time.monotonic()`` value) passed first. Errors are tallied; a ConfigError or a closed broker stops."""
    tally.sent(messages)
    waiting = list(messages)
    pause = 0.05
    while waiting:
        try:
            tally.confirm(broker.publish_batch(topic, waiting))
            return True
        except PublishError as exc:
            tally.error(where, exc, expected=True)
            unsure = set(exc.message_ids)
            if not unsure:  # a PublishError must name what it did not confirm
                tally.error(where, ValueError("PublishError without message_ids"), expected=False)
                unsure = {m.id for m in waiting}
            tally.confirm(m.id for m in waiting if m.id not in unsure)
            waiting = [m for m in waiting if m.id in unsure]
        except ConnectionLost as exc:
            tally.error(where, exc, expected=True)
        except (ConfigError, ClosedError) as exc:
            tally.error(where, exc, expected=False)
            return False
        except BridgeqError as exc:
            tally.error(where, exc, expected=False)
        except Exception as exc:
            tally.error(where, exc, expected=False)
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    return True


class Reader(threading.Thread):
    """One consumer of a group, in a thread of its own: receives, tallies and acks until stopped.

    It does not help the subscription: the core rides out a lost broker. An error that
    escapes ``receive_batch`` is tallied as unexpected, and the reader subscribes again so
    the run can still be judged.
    """

    def __init__(
        self,
        broker: bridgeq.Broker,
        topic: str,
        group: str,
        tally: Tally,
        *,
        prefetch: int = 100,
        name: str = "reader",
        read_ahead: bool = False,
    ) -> None:
        super().__init__(name=f"bridgeq-fault-{name}", daemon=True)
        self.broker, self.topic, self.group, self.tally, self.prefetch = broker, topic, group, tally, prefetch
        self.read_ahead = read_ahead  # then prefetch leaves room for a batch read ahead
        self.where = name
        self.stopping = threading.Event()
        self.joined = threading.Event()
        self.count = 0

    def run(self) -> None:
        sub = None
        try:
            while not self.stopping.is_set():
                try:
                    if sub is None:
                        sub = self.broker.subscribe(
                            self.topic,
                            self.group,
                            prefetch=self.prefetch * (2 if self.read_ahead else 1),
                            max_deliveries=None,
                            read_ahead=self.read_ahead,
                        )
                        self.joined.set()
                    batch = sub.receive_batch(self.prefetch, timeout=0.2)
                    if batch:
                        self.tally.receive(batch)
                        self.count += len(batch)
                        sub.ack(batch)
                except Exception as exc:
                    self.tally.error(self.where, exc, expected=False)
                    if sub is not None:
                        with contextlib.suppress(Exception):
                            sub.close()
                    sub = None
                    self.stopping.wait(0.5)
        finally:
            if sub is not None:
                try:
                    sub.close()
                except Exception as exc:
                    self.tally.error(f"{self.where} close", exc, expected=isinstance(exc, ConnectionLost))

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.join(timeout)


def drain_until(tally: Tally, done: threading.Event | None, patience: float, settle: float = 0.5) -> bool:
    """Wait until publishing is ``done`` and every confirmed id was received, then ``settle``
    seconds more (for late duplicates); False if ``patience`` seconds passed first."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if (done is None or done.is_set()) and tally.has_all_confirmed():
            time.sleep(settle)
            return True
        time.sleep(0.05)
    return False
