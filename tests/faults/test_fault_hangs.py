"""Nothing hangs: while the network to the broker is black-holed, every call ends within its timeout.

A black hole (bytes vanish, nothing answers: a dead link, a firewall dropping packets)
is the fault that turns a missing timeout into a hang. Each built-in backend runs with
short timeouts here (about 1 s) so every call has a bound; each must return or raise
within a few seconds of it, never wait for the network to come back.

The core's part is checked without a network, through a backend whose consumer
raises ConnectionLost for a while: ``receive(timeout)`` must still return on time.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import bridgeq
from bridgeq import registry
from bridgeq.errors import ConnectionLost
from bridgeq.testing.proxy import Proxy, proxied_url, upstream_of
from bridgeq_memory import MemoryBackend
from tests.faults.fault_support import url_of

SHORT = {
    "redis": "socket_timeout=1&connect_timeout=1&retries=0",
    "rabbitmq": "connect_timeout=1&publish_timeout=1",
    "kafka": "timeout_ms=1000",
}
BOUND = 8.0
"""Seconds any call may take once its (1 s) timeout has passed: generous, still far from a hang."""


def _timed(call: Callable[[], object]) -> tuple[float, str]:
    started = time.monotonic()
    try:
        call()
        outcome = "returned"
    except bridgeq.BridgeqError as exc:
        outcome = type(exc).__name__
    return time.monotonic() - started, outcome


@pytest.fixture(params=["redis", "rabbitmq", "kafka"])
def short_url(request: pytest.FixtureRequest) -> str:
    url = url_of(request.param)
    return url + ("&" if "?" in url else "?") + SHORT[request.param]


@pytest.fixture
def through_proxy(short_url: str):
    upstream = upstream_of(short_url)
    assert upstream is not None
    with Proxy(upstream, kafka=short_url.startswith("kafka")) as proxy:
        yield proxy, proxied_url(short_url, proxy)


def _ready(broker: bridgeq.Broker, topic: str) -> bridgeq.Subscription:
    broker.declare(topic, "g")
    sub = broker.subscribe(topic, "g")
    broker.publish(topic, b"warm-up")
    delivery = sub.receive(timeout=20)
    assert delivery is not None
    delivery.ack()
    sub.flush()
    return sub


@pytest.mark.parametrize("call", ["publish", "publish_batch", "declare", "depth"])
def test_broker_calls_end_within_their_timeout_in_a_black_hole(through_proxy, call):
    proxy, url = through_proxy
    topic = f"bq-hang-{uuid.uuid4().hex[:8]}"
    with bridgeq.connect(url) as broker:
        _ready(broker, topic).close()
        proxy.blackhole(30)
        try:
            calls = {
                "publish": lambda: broker.publish(topic, b"into the void"),
                "publish_batch": lambda: broker.publish_batch(topic, [b"a", b"b", b"c"]),
                "declare": lambda: broker.declare(topic, "another-group"),
                "depth": lambda: broker.depth(topic, "g"),
            }
            took, outcome = _timed(calls[call])
        finally:
            proxy.heal()
    assert took < BOUND, f"{call} took {took:.1f} s in a black hole ({outcome})"
    assert outcome != "returned" or call == "depth", f"{call} cannot have been confirmed in a black hole"


@contextlib.contextmanager
def _subscribed_in_a_black_hole(through_proxy: tuple[Any, str]) -> Iterator[bridgeq.Subscription]:
    """A ready subscription whose broker then falls into a black hole; healed and closed afterwards."""
    proxy, url = through_proxy
    with bridgeq.connect(url) as broker:
        sub = _ready(broker, f"bq-hang-{uuid.uuid4().hex[:8]}")
        proxy.blackhole(30)
        try:
            yield sub
        finally:
            proxy.heal()
            sub.close()


def test_receive_returns_on_time_in_a_black_hole(through_proxy):
    with _subscribed_in_a_black_hole(through_proxy) as sub:
        took, outcome = _timed(lambda: sub.receive(timeout=1.0))
    assert took < 1.0 + BOUND, f"receive(timeout=1) took {took:.1f} s in a black hole ({outcome})"


def test_close_ends_a_blocked_receive_promptly_in_a_black_hole(through_proxy):
    with _subscribed_in_a_black_hole(through_proxy) as sub:
        reader = threading.Thread(target=sub.receive)
        reader.start()
        time.sleep(0.5)
        took, outcome = _timed(sub.close)
        reader.join(BOUND)
        ended = not reader.is_alive()
    reader.join(60)
    assert took < BOUND, f"close() took {took:.1f} s in a black hole ({outcome})"
    assert ended, "close() must end the blocked receive()"


def test_broker_close_is_prompt_in_a_black_hole(through_proxy):
    proxy, url = through_proxy
    broker = bridgeq.connect(url)
    _ready(broker, f"bq-hang-{uuid.uuid4().hex[:8]}")
    proxy.blackhole(30)
    try:
        took, outcome = _timed(broker.close)
    finally:
        proxy.heal()
    assert took < BOUND, f"broker.close() took {took:.1f} s in a black hole ({outcome})"


# -- the core's part, without a network ------------------------------------------------------


class _Unreachable:
    """Shared switch: while set, every fetch raises ConnectionLost (as a backend does when the broker is down)."""

    down = threading.Event()


class _FlakyBackend(MemoryBackend):
    def consumer(self, topic, group, prefetch):
        consumer = super().consumer(topic, group, prefetch)
        fetch = consumer.fetch

        def flaky(max_messages: int, timeout: float):
            if _Unreachable.down.is_set():
                raise ConnectionLost("test: the broker is unreachable")
            return fetch(max_messages, timeout)

        consumer.fetch = flaky  # type: ignore[method-assign]
        return consumer


@pytest.fixture
def flaky_url():
    registry.register("flakymem", _FlakyBackend)
    _Unreachable.down.clear()
    yield f"flakymem://hangs-{uuid.uuid4().hex[:6]}"
    _Unreachable.down.clear()
    registry.unregister("flakymem")


@pytest.mark.parametrize("timeout", [0.0, 0.5, 2.0])
def test_receive_honours_its_timeout_while_the_broker_is_unreachable(flaky_url, timeout):
    """The subscription rides out the outage, but receive(timeout) still returns None on time."""
    with bridgeq.connect(flaky_url) as broker, broker.subscribe("t", "g") as sub:
        _Unreachable.down.set()
        safety = threading.Timer(10.0, _Unreachable.down.clear)  # the broker comes back, at the latest
        safety.start()
        took, _ = _timed(lambda: sub.receive(timeout=timeout))
        safety.cancel()
        _Unreachable.down.clear()
        mid = broker.publish("t", b"after the outage")
        delivery = sub.receive(timeout=5)
    assert took < timeout + 1.0, f"receive(timeout={timeout}) took {took:.1f} s while the broker was unreachable"
    assert delivery is not None and delivery.id == mid, "the subscription resumes by itself"


def test_iteration_and_run_resume_after_an_outage(flaky_url):
    """No help from the application: the same subscription delivers again once the broker is back."""
    with bridgeq.connect(flaky_url) as broker, broker.subscribe("t", "g") as sub:
        ids = broker.publish_batch("t", [b"1", b"2"])
        _Unreachable.down.set()
        threading.Timer(1.0, _Unreachable.down.clear).start()
        seen: list[str] = []
        handled = sub.run(lambda d: seen.append(d.id), stop_after=2, idle_timeout=10)
    assert handled == 2 and seen == ids


# -- closing while the broker is unreachable ------------------------------------------------


class _AckFailsBackend(MemoryBackend):
    """Acks cannot be sent (the connection is gone); everything else works."""

    def consumer(self, topic, group, prefetch):
        consumer = super().consumer(topic, group, prefetch)

        def ack(deliveries):
            raise ConnectionLost("test: the connection is gone; these acks were not sent")

        consumer.ack = ack  # type: ignore[method-assign]
        return consumer


@pytest.fixture
def ack_fails_url():
    registry.register("ackfailsmem", _AckFailsBackend)
    yield f"ackfailsmem://close-{uuid.uuid4().hex[:6]}"
    registry.unregister("ackfailsmem")


def test_subscription_close_does_not_raise_when_its_last_acks_cannot_be_sent(ack_fails_url):
    """Unsent acks only mean redelivery (at-least-once); close() must still close, quietly."""
    with bridgeq.connect(ack_fails_url) as broker:
        sub = broker.subscribe("t", "g")
        broker.publish("t", b"x")
        sub.receive(timeout=1).ack()
        sub.close()  # raises ConnectionLost today
        assert sub.closed


def test_broker_close_closes_every_subscription_even_when_one_fails(ack_fails_url):
    broker = bridgeq.connect(ack_fails_url)
    subs = [broker.subscribe("t", f"g{i}") for i in range(3)]
    broker.publish("t", b"x")
    for sub in subs:
        sub.receive(timeout=1).ack()
    with contextlib.suppress(bridgeq.BridgeqError):
        broker.close()
    assert broker.closed
    assert all(sub.closed for sub in subs), "a subscription left open holds its consumer (and its group slot)"


class _SlowToCloseBackend(MemoryBackend):
    """Each consumer's close waits for every other one to be closing too (as each waits out its timeout
    when the broker is unreachable): it ends only if they are closed at once."""

    closing: threading.Barrier

    def consumer(self, topic, group, prefetch):
        consumer = super().consumer(topic, group, prefetch)
        close = consumer.close

        def slow_close() -> None:
            type(self).closing.wait(timeout=5)  # BrokenBarrierError if the closes come one by one
            close()

        consumer.close = slow_close  # type: ignore[method-assign]
        return consumer


def test_broker_close_closes_its_subscriptions_at_once():
    """One by one, a broker's close took the sum of its subscriptions' close timeouts in an outage
    (ten RabbitMQ subscriptions: 100 s); together, about one."""
    registry.register("slowclose", _SlowToCloseBackend)
    try:
        _SlowToCloseBackend.closing = threading.Barrier(4)
        broker = bridgeq.connect(f"slowclose://close-{uuid.uuid4().hex[:6]}")
        subscriptions = [broker.subscribe("t", group) for group in ("a", "b", "c", "d")]
        broker.close()  # raises BrokenBarrierError if the four closes did not overlap
        assert all(sub.closed for sub in subscriptions) and not _SlowToCloseBackend.closing.broken
    finally:
        registry.unregister("slowclose")


def test_broker_close_closes_every_subscription_where_no_thread_can_start(monkeypatch):
    """In an atexit handler no new thread may start: the closes then run one by one, and all happen."""
    import bridgeq.api

    class NoThreads:
        def __init__(self, *args: Any) -> None:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(bridgeq.api, "ThreadPoolExecutor", NoThreads)
    broker = bridgeq.connect(f"memory://atexit-{uuid.uuid4().hex[:6]}")
    subscriptions = [broker.subscribe("t", group) for group in ("a", "b", "c")]
    broker.close()
    assert all(sub.closed for sub in subscriptions) and broker.closed
