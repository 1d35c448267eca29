"""The Redis backend against a real server: wire layout, foreign entries, redelivery, leases, options."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis.exceptions as rx

import bridgeq
from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost, PublishError
from bridgeq.testing.targets import with_options
from bridgeq_redis.errors import ERRORS, PoolExhausted
from bridgeq_redis.scripts import REQUEUED_IDLE_MS


def key(topic: str) -> str:
    return f"bridgeq:{topic}"


def collect(sub, count: int, patience: float = 10.0, ack: bool = True) -> list[bridgeq.Delivery]:
    got: list[bridgeq.Delivery] = []
    deadline = time.monotonic() + patience
    while len(got) < count and time.monotonic() < deadline:
        for d in sub.receive_batch(count - len(got), timeout=0.2):
            got.append(d)
            if ack:
                d.ack()
    return got


# -- wire layout and foreign entries ----------------------------------------------------


def test_wire_layout_is_plain_stream_fields(broker, topic, raw) -> None:
    mid = broker.publish(topic, b"\x00payload", headers={"type": "created", "ce_time": "t"}, key="cust-7", id="id-1")
    broker.publish(topic, "no key")
    (_, first), (_, second) = raw.xrange(key(topic))
    assert mid == "id-1"
    assert first == {
        b"ce_id": b"id-1",
        b"body": b"\x00payload",
        b"key": b"cust-7",
        b"type": b"created",
        b"ce_time": b"t",
    }
    assert set(second) == {b"ce_id", b"body"}, "no key field without a key, no other fields"
    assert next(iter(first)) == b"ce_id"


def test_foreign_entry_body_headers_and_derived_id(broker, topic, raw) -> None:
    broker.declare(topic, "g")
    entry = raw.xadd(key(topic), {"body": b"hello", "foo": "bar", "bin": b"\xff\xfe"}).decode()
    raw.xadd(key(topic), {"data": "no body field"})
    with broker.subscribe(topic, "g") as sub:
        first, second = collect(sub, 2, ack=False)
        assert first.body == b"hello"
        assert first.headers == {"foo": "bar", "bin": "\ufffd\ufffd"}
        assert first.key is None
        assert first.id == f"{key(topic)}-{entry}"
        assert second.body == b"" and second.headers == {"data": "no body field"}
        first.nack(requeue=True)
        second.ack()
        (again,) = collect(sub, 1)
    assert (again.id, again.body, again.attempt) == (first.id, b"hello", 2), "the derived id is stable"


def test_foreign_stream_addressed_by_its_own_name_with_its_own_fields(redis_url, raw) -> None:
    import uuid

    stream = f"bq-foreign-{uuid.uuid4().hex[:8]}"
    raw.xadd(stream, {"data": "hello", "partition": "p1", "foo": "bar"})
    try:
        url = with_options(redis_url, prefix="", body_field="data", key_field="partition")
        with bridgeq.connect(url) as broker, broker.subscribe(stream, "g") as sub:
            (d,) = collect(sub, 1)
            assert (d.body, d.key, dict(d.headers)) == (b"hello", "p1", {"foo": "bar"})
            assert d.id.startswith(f"{stream}-")
            broker.publish(stream, b"back", key="k2")
        last = raw.xrevrange(stream, count=1)[0][1]
        assert last[b"data"] == b"back" and last[b"partition"] == b"k2"
    finally:
        raw.delete(stream)


def test_headers_colliding_with_body_or_key_field_are_refused_before_sending(broker, topic, raw) -> None:
    for bad in ({"body": "x"}, {"key": "x"}):
        with pytest.raises(ConfigError, match="collide"):
            broker.publish_batch(topic, [bridgeq.Message(b"ok"), bridgeq.Message(b"bad", headers=bad)])
    assert raw.exists(key(topic)) == 0


def test_declare_on_a_key_that_is_not_a_stream_is_a_config_error_and_publish_a_publish_error(broker, topic, raw):
    raw.set(key(topic), "a string")
    with pytest.raises(ConfigError, match="WRONGTYPE"):
        broker.declare(topic, "g")
    with pytest.raises(BridgeqError, match="WRONGTYPE"):
        broker.declare(topic)
    messages = [bridgeq.Message(b"1"), bridgeq.Message(b"2")]
    with pytest.raises(PublishError) as info:
        broker.publish_batch(topic, messages)
    assert set(info.value.message_ids) == {m.id for m in messages}
    with pytest.raises(PublishError):
        broker.publish(topic, b"one")


# -- redelivery ------------------------------------------------------------------------


def test_nack_requeue_redelivers_within_a_second_keeping_ids_with_attempt_plus_one(broker, topic) -> None:
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(20)])
    with broker.subscribe(topic, "g", prefetch=20) as sub:
        first = collect(sub, 20, ack=False)
        for d in first:
            d.nack(requeue=True)
        started = time.monotonic()
        again = collect(sub, 20, ack=False)
        assert time.monotonic() - started < 1.0
        assert sorted(d.id for d in again) == sorted(ids)
        assert {d.attempt for d in again} == {2}
        for d in again:
            d.nack(requeue=True)
        third = collect(sub, 20)
        assert {d.attempt for d in third} == {3}
    assert broker.depth(topic, "g") == 0


def test_requeued_message_goes_to_another_member_within_a_second(broker, topic) -> None:
    broker.declare(topic, "g")
    mid = broker.publish(topic, b"x")
    with broker.subscribe(topic, "g") as a, broker.subscribe(topic, "g") as b:
        (d,) = collect(a, 1, ack=False)
        d.nack(requeue=True)
        a.flush()  # a stops reading: only b can pick it up
        started = time.monotonic()
        (again,) = collect(b, 1)
        assert time.monotonic() - started < 1.0
        assert (again.id, again.attempt) == (mid, 2)


def test_close_hands_unacked_messages_back_at_once_and_leaves_the_group(broker, topic, raw) -> None:
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(10)])
    first = broker.subscribe(topic, "g")
    held = collect(first, 10, ack=False)
    assert len(held) == 10
    first.close()
    started = time.monotonic()
    with broker.subscribe(topic, "g") as second:
        again = collect(second, 10)
        assert time.monotonic() - started < 1.0
        assert sorted(d.id for d in again) == sorted(ids) and {d.attempt for d in again} == {2}
    # The second left with nothing pending; the first was removed once its entries were taken over.
    assert raw.xinfo_consumers(key(topic), "g") == []


def test_read_ahead_keeps_the_next_fetch_in_flight_within_prefetch(broker, topic, raw) -> None:
    """With read_ahead the next XREADGROUP goes out before this batch is handed over; together they
    never exceed prefetch, and the batches come in stream order."""
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(30)])
    with broker.subscribe(topic, "g", prefetch=25, read_ahead=True) as sub:
        got = sub.receive_batch(10, timeout=5)
        assert raw.xpending(key(topic), "g")["pending"] == 20  # ten handed over, ten read ahead
        got += sub.receive_batch(8, timeout=5)  # from the read-ahead, which asked for 5 more: 25 in all
        assert raw.xpending(key(topic), "g")["pending"] == 25
        got += sub.receive_batch(10, timeout=5)  # the two left of the read-ahead
        got += sub.receive_batch(10, timeout=5)  # the last read-ahead: no room for another
        assert raw.xpending(key(topic), "g")["pending"] == 25
        assert sub.receive_batch(10, timeout=0.3) == []  # at the prefetch limit
        assert [d.id for d in got] == ids[:25]
        sub.ack(got)
        got += collect(sub, 5)
        assert [d.id for d in got] == ids
    assert raw.xpending(key(topic), "g")["pending"] == 0


def test_a_read_ahead_that_cannot_be_sent_leaves_the_batch_read_delivered(broker, topic, raw, monkeypatch) -> None:
    """The read-ahead goes out after a batch was read: when no connection can be had for it (pool full,
    Redis gone), the batch is still returned, and the next fetch reads as without read-ahead."""
    from bridgeq_redis import resp

    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(20)])

    def unavailable(pool: Any) -> Any:
        raise rx.MaxConnectionsError("Too many connections")

    with broker.subscribe(topic, "g", prefetch=20, read_ahead=True) as sub:
        monkeypatch.setattr(resp, "InFlight", unavailable)
        first = sub.receive_batch(10, timeout=5)
        assert [d.id for d in first] == ids[:10]
        assert raw.xpending(key(topic), "g")["pending"] == 10  # nothing read ahead
        monkeypatch.undo()
        rest = collect(sub, 10)
        sub.ack(first)
    assert [d.id for d in rest] == ids[10:]


def test_read_ahead_entries_go_back_on_close(broker, topic, raw) -> None:
    """What the last read-ahead got is handed back with the rest (made claimable at once, not after
    claim_idle_ms), and another member gets all twenty."""
    broker.declare(topic, "g")
    ids = broker.publish_batch(topic, [f"m{i}" for i in range(20)])
    first = broker.subscribe(topic, "g", prefetch=20, read_ahead=True)
    assert len(first.receive_batch(10, timeout=5)) == 10
    assert raw.xpending(key(topic), "g")["pending"] == 20
    first.close()
    pending = raw.xpending_range(key(topic), "g", min="-", max="+", count=100)
    assert len(pending) == 20 and all(p["time_since_delivered"] >= REQUEUED_IDLE_MS for p in pending)
    with broker.subscribe(topic, "g") as second:
        again = collect(second, 20)
    assert sorted(d.id for d in again) == sorted(ids)
    assert raw.xinfo_consumers(key(topic), "g") == []


def test_a_slow_handler_keeps_its_message_while_its_consumer_lives(redis_url, topic) -> None:
    url = with_options(redis_url, claim_idle_ms=500)
    with bridgeq.connect(url) as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"slow")
        with broker.subscribe(topic, "g") as slow, broker.subscribe(topic, "g") as other:
            (d,) = collect(slow, 1, ack=False)
            assert collect(other, 1, patience=2.0) == [], "renewed: not taken over after 4 x claim_idle_ms"
            d.ack()
        assert broker.depth(topic, "g") == 0


def test_without_renewal_a_message_held_past_claim_idle_is_taken_over(redis_url, topic) -> None:
    url = with_options(redis_url, claim_idle_ms=500, renew=False)
    with bridgeq.connect(url) as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"slow")
        with broker.subscribe(topic, "g") as slow, broker.subscribe(topic, "g") as other:
            (d,) = collect(slow, 1, ack=False)
            (taken,) = collect(other, 1, patience=3.0)
            assert (taken.id, taken.attempt) == (d.id, 2)
            d.ack()


def test_stream_or_group_deleted_under_a_running_consumer_is_recreated(broker, topic, raw, caplog) -> None:
    broker.declare(topic, "g")
    broker.publish(topic, b"before")
    deletions = {
        "stream": lambda: raw.delete(key(topic)),  # the blocked XREADGROUP gets UNBLOCKED
        "group": lambda: raw.xgroup_destroy(key(topic), "g"),  # the blocked XREADGROUP gets NOGROUP
    }
    expected = {"stream": [b"after stream"], "group": [b"after stream", b"after group"]}  # re-made at earliest
    with broker.subscribe(topic, "g") as sub, caplog.at_level(logging.WARNING, logger="bridgeq.redis"):
        collect(sub, 1)
        for what, delete in deletions.items():
            timer = threading.Timer(0.05, delete)
            timer.start()
            got = collect(sub, 2, patience=0.5)  # blocked in XREADGROUP while it goes
            timer.join()
            broker.publish(topic, f"after {what}")
            got += collect(sub, len(expected[what]) - len(got), patience=2.0)
            assert [d.body for d in got] == expected[what]
            assert collect(sub, 1, patience=0.3) == []
    assert caplog.text.count("re-creating the group") == 2


# -- groups, retention, depth ------------------------------------------------------------


def test_group_start_latest_gives_no_replay(redis_url, topic) -> None:
    with bridgeq.connect(with_options(redis_url, group_start="latest")) as broker:
        assert broker.capabilities.replay is False
        broker.publish(topic, b"old")
        broker.declare(topic, "late")
        new = broker.publish(topic, b"new")
        with broker.subscribe(topic, "late") as sub:
            assert [d.id for d in collect(sub, 2, patience=1.0)] == [new]
    with bridgeq.connect(redis_url) as broker:
        assert broker.capabilities.replay is True
        broker.declare(topic, "early")
        with broker.subscribe(topic, "early") as sub:
            assert [d.body for d in collect(sub, 2)] == [b"old", b"new"]


def test_maxlen_trims_approximately_and_depth_stays_within_the_stream(redis_url, topic, raw) -> None:
    with bridgeq.connect(with_options(redis_url, maxlen=100)) as broker:
        broker.declare(topic, "g")
        for _ in range(10):
            broker.publish_batch(topic, [b"x"] * 100)
        length = raw.xlen(key(topic))
        assert 100 <= length < 1000
        assert broker.depth(topic, "g") == length, "trimmed unread entries no longer count"
        totals = broker.totals(topic, "g")
        assert totals is not None and totals.published == 1000


def test_max_age_trims_old_entries(redis_url, topic, raw) -> None:
    with bridgeq.connect(with_options(redis_url, max_age_ms=50)) as broker:
        broker.publish_batch(topic, [b"old"] * 500)
        time.sleep(0.1)
        broker.publish(topic, b"new")
    assert raw.xlen(key(topic)) < 500


def test_depth_is_lag_plus_pending_and_totals_count_settled(broker, topic) -> None:
    broker.declare(topic, "g")
    broker.publish_batch(topic, [b"x"] * 10)
    assert broker.depth(topic, "g") == 10
    with broker.subscribe(topic, "g") as sub:
        got = collect(sub, 4, ack=False)
        assert broker.depth(topic, "g") == 10
        for d in got[:3]:
            d.ack()
        assert broker.depth(topic, "g") == 7
        assert broker.totals(topic, "g") == (10, 3)
    assert broker.depth(topic, "missing-group") == 0
    assert broker.depth("bq-no-such-topic", "g") == 0


# -- URLs, options, connections, errors ----------------------------------------------------


def test_url_options_reach_the_backend(redis_url) -> None:
    with bridgeq.connect(with_options(redis_url, claim_idle_ms=7000, max_message_size=1000)) as broker:
        assert 7.0 < broker.capabilities.crash_redelivery_seconds <= 9.0
        assert broker.capabilities.max_message_size == 1000
    with pytest.raises(ConfigError, match="claim_idl"):
        bridgeq.connect(with_options(redis_url, claim_idl_ms=1))


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://h1,h2", "one host"),
        ("redis://localhost/x", "database number"),
        ("redis://localhost/\u00b2", "database number"),
        ("redis://localhost?maxlen=10&max_age_ms=10", "exclude"),
        ("redis://localhost?tls_insecure=true", "rediss"),
        ("redis://localhost?body_field=key", "different"),
        ("redis://localhost?body_field=ce_id", "ce_id"),
        ("redis://localhost?group_start=middle", "earliest"),
        ("redis://localhost?claim_idle_ms=5", "at least"),
        ("rediss://localhost?tls_ca_file=/no/such/ca.pem", "no such file"),
    ],
)
def test_bad_urls_are_config_errors(redis_url, url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        bridgeq.connect(url)


def test_database_number_is_used(redis_url, topic) -> None:
    import redis

    url = with_options(redis_url.split("?")[0].rsplit("/", 1)[0] + "/3", claim_idle_ms=2000)
    with bridgeq.connect(url) as broker:
        broker.publish(topic, b"in db 3")
        other = redis.Redis.from_url(url.split("?")[0])
        try:
            assert other.xlen(key(topic)) == 1
        finally:
            other.delete(key(topic))
            other.close()


def test_connection_refused_is_connection_lost_without_the_password() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with bridgeq.connect(f"redis://:hunter2@127.0.0.1:{port}/0?retries=0&connect_timeout=1") as broker:
        assert "hunter2" not in repr(broker) + repr(broker.backend)
        with pytest.raises(ConnectionLost) as info:
            broker.publish("t", b"x")
        with pytest.raises(ConnectionLost):
            broker.depth("t", "g")
    assert "hunter2" not in str(info.value) + repr(info.value)


def test_every_redis_connection_error_class_is_mapped() -> None:
    def all_subclasses(cls: type) -> set[type]:
        return {cls} | {s for sub in cls.__subclasses__() for s in all_subclasses(sub)}

    def mapped(exc_type: type) -> type | None:
        return next((target for source, target in ERRORS if issubclass(exc_type, source)), None)

    for cls in all_subclasses(rx.ConnectionError) | all_subclasses(rx.TimeoutError):
        assert mapped(cls) in (ConnectionLost, ConfigError, PoolExhausted), cls
    assert mapped(rx.MaxConnectionsError) is PoolExhausted  # the pool is full: not an outage
    assert mapped(rx.ConnectionError) is ConnectionLost and mapped(rx.TimeoutError) is ConnectionLost
    assert mapped(rx.AuthenticationError) is ConfigError
    assert mapped(rx.ResponseError) is BridgeqError


def test_password_and_wrong_password(private_server) -> None:
    from urllib.parse import quote

    pw = quote(private_server.password, safe="")
    with bridgeq.connect(f"redis://:{pw}@127.0.0.1:{private_server.port}/0") as broker:
        broker.publish("t", b"x")
        assert broker.depth("t", "g") == 0
    wrong = f"redis://:wrong-{pw}@127.0.0.1:{private_server.port}/0"
    with bridgeq.connect(wrong) as broker, pytest.raises(ConfigError) as info:
        broker.publish("t", b"x")
    assert pw not in str(info.value) and private_server.password not in str(info.value)


def test_tls_verifies_the_server_by_default(private_server) -> None:
    from urllib.parse import quote

    base = f"rediss://:{quote(private_server.password, safe='')}@localhost:{private_server.tls_port}/0"
    ca = private_server.certs / "ca.crt"
    with bridgeq.connect(f"{base}?tls_ca_file={ca}") as broker:
        broker.declare("t", "g")
        broker.publish("t", b"over tls")
        with broker.subscribe("t", "g") as sub:
            assert [d.body for d in collect(sub, 10, patience=1.0)][-1] == b"over tls"
    with bridgeq.connect(f"{base}?retries=0") as broker, pytest.raises(ConnectionLost, match=r"(?i)certificate"):
        broker.publish("t", b"x")
    with bridgeq.connect(f"{base}?tls_insecure=true") as broker:
        broker.publish("t", b"unverified")


def test_dropped_connections_are_reopened_without_losing_or_duplicating(private_server) -> None:
    from urllib.parse import quote

    import redis

    url = f"redis://:{quote(private_server.password, safe='')}@127.0.0.1:{private_server.port}/0"
    admin = redis.Redis(port=private_server.port, password=private_server.password)
    with bridgeq.connect(url) as broker:
        broker.declare("drop", "g")
        with broker.subscribe("drop", "g") as sub:
            broker.publish("drop", b"1")
            assert [d.body for d in collect(sub, 1)] == [b"1"]
            done = threading.Timer(0.05, lambda: admin.client_kill_filter(_type="normal", skipme=True))
            done.start()  # also drops the consumer's blocked XREADGROUP: it is retried
            assert collect(sub, 1, patience=0.5) == []
            done.join()
            broker.publish("drop", b"2")  # a stale pooled connection is replaced before the XADD is sent
            assert [d.body for d in collect(sub, 2, patience=2.0)] == [b"2"]
        assert broker.depth("drop", "g") == 0
        assert admin.xlen("bridgeq:drop") == 2
        broker.delete("drop")
    admin.close()


def test_declaring_a_topic_alone_makes_an_empty_stream(broker, topic, raw) -> None:
    broker.declare(topic)
    broker.declare(topic)
    assert raw.type(key(topic)) == b"stream"
    assert raw.xlen(key(topic)) == 0 and raw.xinfo_groups(key(topic)) == []
    assert raw.xinfo_stream(key(topic))["entries-added"] == 0


def test_acks_recorded_while_another_thread_fetches_go_out_with_the_next_fetch(broker, topic, raw) -> None:
    """One round trip for both: the XACK is written just ahead of the XREADGROUP."""
    broker.publish_batch(topic, [bridgeq.Message(b"m%d" % i) for i in range(20)])
    with broker.subscribe(topic, "g", prefetch=100, ack_batch=1000) as sub:
        first = sub.receive_batch(10, timeout=5)
        sent: list[int] = []
        consumer: Any = sub._consumer
        real = consumer.ack_and_fetch
        consumer.ack_and_fetch = lambda acks, n, wait: sent.append(len(acks)) or real(acks, n, wait)
        backend: Any = consumer._backend
        commands: list[list[bytes]] = []
        call = backend.call
        backend.call = lambda command, *more: commands.append(command) or call(command, *more)
        with sub._io:  # as while the reader thread fetches: the acks wait for it
            sub.ack(first)
            second = sub.receive_batch(10, timeout=5)
        backend.call = call
        assert sent == [10]
        assert [command[0] for command in commands] == [b"XREADGROUP"]  # with the XACK ahead of it
        assert len(second) == 10
        assert raw.xpending(key(topic), "g")["pending"] == 10  # the first ten acked
        sub.ack(second)


def test_a_black_hole_costs_one_round_of_retries_not_retries_squared(redis_url, topic) -> None:
    """redis-py retries a pooled connection's connect itself; bridgeq's hot commands retried around that
    again, so a fetch in a black hole took 1 + retries x (retries + 1) socket timeouts (13 s here, over
    two minutes with the defaults). A connect that failed is not retried a second time now."""
    from bridgeq.testing.proxy import Proxy, proxied_url, upstream_of

    url = with_options(redis_url, socket_timeout=1, connect_timeout=1, retries=3)
    with (
        Proxy(upstream_of(url)) as proxy,  # type: ignore[arg-type]
        bridgeq.connect(proxied_url(url, proxy)) as broker,
    ):
        broker.declare(topic, "g")
        with broker.subscribe(topic, "g") as sub:
            broker.publish(topic, b"x")
            assert len(collect(sub, 1)) == 1  # acked
            sub.flush()
            proxy.blackhole(60)
            started = time.monotonic()
            assert sub.receive(timeout=1) is None  # the subscription waits the outage out: it returns on time
            took = time.monotonic() - started
            proxy.heal()
    assert took < 9, f"receive(timeout=1) took {took:.1f} s in a black hole with socket_timeout=1, retries=3"


def test_a_full_connection_pool_is_named_not_taken_for_an_outage(redis_url, topic) -> None:
    """redis-py refuses a connection beyond max_connections at once with a ConnectionError subclass:
    reported as ConnectionLost, a subscription waited two minutes for a healthy Redis."""
    with bridgeq.connect(with_options(redis_url, max_connections=1)) as broker:
        broker.declare(topic, "g")
        pool: Any = broker.backend.client.connection_pool  # type: ignore[attr-defined]
        held = pool.get_connection()
        try:
            with pytest.raises(PoolExhausted, match="Too many connections"):
                broker.depth(topic, "g")
        finally:
            pool.release(held)
        assert broker.depth(topic, "g") == 0


def test_a_fetch_may_wait_longer_than_socket_timeout(redis_url, topic) -> None:
    """A fetch's BLOCK is kept short of socket_timeout (Redis ends it up to 0.2 s late): asked to wait
    longer, an idle fetch returns nothing instead of timing its connection out as lost."""
    with bridgeq.connect(with_options(redis_url, socket_timeout=1)) as broker:
        broker.declare(topic, "g")
        consumer: Any = broker.backend.consumer(topic, "g", 10)  # type: ignore[attr-defined]
        try:
            assert consumer.fetch(10, 2.5) == []
        finally:
            consumer.close()
