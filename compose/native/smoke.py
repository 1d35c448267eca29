"""Smoke-check the brokers that compose/native/*.sh bring up, with the same
client libraries bridgeq uses (redis-py, pika, kafka-python).

    python compose/native/smoke.py check [redis] [rabbitmq] [kafka]
    python compose/native/smoke.py write [...]   # leave durable data behind
    python compose/native/smoke.py read  [...]   # after a restart: is it still there?

URLs come from BRIDGEQ_TEST_{REDIS,RABBITMQ,KAFKA}_URL (defaults: localhost).
Exit status 0 when every named check passes. Not part of the library: a tool
for people and CI to see that the brokers work before the real suites run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from urllib.parse import urlparse

REDIS_URL = os.environ.get("BRIDGEQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("BRIDGEQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
KAFKA_URL = os.environ.get("BRIDGEQ_TEST_KAFKA_URL", "kafka://127.0.0.1:9092")

PERSIST_KEY = "bridgeq-smoke-persist"


def log(msg: str) -> None:
    print(f"[smoke] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- redis
def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=10)


def redis_check() -> None:
    r = redis_client()
    stream = f"bridgeq-smoke-{uuid.uuid4().hex[:8]}"
    try:
        r.xgroup_create(stream, "g", id="0", mkstream=True)
        mid = r.xadd(stream, {"body": b"hello"})
        got = r.xreadgroup("g", "c1", {stream: ">"}, count=1, block=2000)
        assert got and got[0][1][0][0] == mid, got
        assert r.xack(stream, "g", mid) == 1
        info = r.info("server")
        log(f"redis ok: version {info['redis_version']}, XADD/XREADGROUP/XACK")
    finally:
        r.delete(stream)


def redis_write() -> None:
    r = redis_client()
    r.delete(PERSIST_KEY)
    r.xadd(PERSIST_KEY, {"body": b"survives-restart"})
    log("redis: wrote stream " + PERSIST_KEY)


def redis_read() -> None:
    r = redis_client()
    entries = r.xrange(PERSIST_KEY)
    assert entries and entries[-1][1][b"body"] == b"survives-restart", entries
    r.delete(PERSIST_KEY)
    log("redis: stream survived the restart")


# ------------------------------------------------------------------ rabbitmq
def rabbit_conn():
    import pika

    params = pika.URLParameters(RABBITMQ_URL)
    params.socket_timeout = 10
    params.blocked_connection_timeout = 10
    return pika.BlockingConnection(params)


def rabbit_check() -> None:
    import pika

    conn = rabbit_conn()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = f"bridgeq-smoke-qq-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
        ch.basic_publish("", q, b"hello", pika.BasicProperties(delivery_mode=2), mandatory=True)
        method, props, body = _rabbit_get(ch, q)
        assert body == b"hello"
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, props, body = _rabbit_get(ch, q)
        count = (props.headers or {}).get("x-delivery-count")
        assert method.redelivered and count == 1, (method, props.headers)
        ch.basic_ack(method.delivery_tag)
        ch.queue_delete(q)
        version = conn._impl.server_properties.get("version", b"?")
        if isinstance(version, bytes):
            version = version.decode()
        log(
            f"rabbitmq ok: version {version}, quorum queue, publisher confirms, "
            f"nack+requeue -> x-delivery-count={count}"
        )
    finally:
        conn.close()


def _rabbit_get(ch, q, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(q, auto_ack=False)
        if method is not None:
            return method, props, body
        time.sleep(0.05)
    raise AssertionError(f"no message in {q} within {timeout}s")


def rabbit_write() -> None:
    import pika

    conn = rabbit_conn()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(PERSIST_KEY, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_purge(PERSIST_KEY)
        ch.basic_publish("", PERSIST_KEY, b"survives-restart", pika.BasicProperties(delivery_mode=2))
        log("rabbitmq: wrote 1 message to quorum queue " + PERSIST_KEY)
    finally:
        conn.close()


def rabbit_read() -> None:
    conn = rabbit_conn()
    try:
        ch = conn.channel()
        method, _props, body = _rabbit_get(ch, PERSIST_KEY, timeout=15)
        assert body == b"survives-restart", body
        ch.basic_ack(method.delivery_tag)
        ch.queue_delete(PERSIST_KEY)
        log("rabbitmq: quorum queue message survived the restart")
    finally:
        conn.close()


# --------------------------------------------------------------------- kafka
def kafka_bootstrap() -> str:
    u = urlparse(KAFKA_URL)
    return u.netloc or "127.0.0.1:9092"


def kafka_create_topic(name: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(), request_timeout_ms=15000)
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)], timeout_ms=15000)
        deadline = time.monotonic() + 15
        while name not in admin.list_topics():
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {name} not listed after creation")
            time.sleep(0.2)
    finally:
        admin.close()


def kafka_produce(topic: str, values) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap(), acks="all", retries=5, linger_ms=0)
    try:
        for v in values:
            producer.send(topic, v).get(timeout=30)
    finally:
        producer.close(timeout=10)


def kafka_consume(topic: str, group: str, n: int, timeout: float = 30.0):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        consumer.commit()
    finally:
        consumer.close()
    return got


def kafka_check() -> None:
    import kafka

    topic = f"bridgeq-smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    kafka_create_topic(topic)
    kafka_produce(topic, [b"one", b"two"])
    got = kafka_consume(topic, "bridgeq-smoke", 2)
    assert got == [b"one", b"two"], got
    log(
        f"kafka ok: kafka-python {kafka.__version__}, create_topics, acks=all produce, "
        f"group consume+commit ({time.monotonic() - t0:.1f}s)"
    )


def kafka_write() -> None:
    kafka_create_topic(PERSIST_KEY)
    kafka_produce(PERSIST_KEY, [b"before-restart"])
    got = kafka_consume(PERSIST_KEY, PERSIST_KEY, 1)
    assert got == [b"before-restart"], got
    kafka_produce(PERSIST_KEY, [b"survives-restart"])
    log("kafka: wrote 2 records, group committed past the first")


def kafka_read() -> None:
    from kafka.admin import KafkaAdminClient

    # The committed offset survived too: the group resumes at the second record.
    got = kafka_consume(PERSIST_KEY, PERSIST_KEY, 1)
    assert got == [b"survives-restart"], got
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap())
    try:
        admin.delete_groups([PERSIST_KEY])
        admin.delete_topics([PERSIST_KEY])
    finally:
        admin.close()
    log("kafka: records and committed group offset survived the restart")


CHECKS = {
    "redis": {"check": redis_check, "write": redis_write, "read": redis_read},
    "rabbitmq": {"check": rabbit_check, "write": rabbit_write, "read": rabbit_read},
    "kafka": {"check": kafka_check, "write": kafka_write, "read": kafka_read},
}


def main(argv) -> int:
    if not argv or argv[0] not in ("check", "write", "read"):
        print(__doc__, file=sys.stderr)
        return 2
    action, names = argv[0], argv[1:] or list(CHECKS)
    failed = 0
    for name in names:
        if name not in CHECKS:
            print(f"unknown broker {name!r}; choose from {', '.join(CHECKS)}", file=sys.stderr)
            return 2
        try:
            CHECKS[name][action]()
        except Exception as exc:  # report every broker, then fail
            failed += 1
            log(f"{name} {action} FAILED: {type(exc).__name__}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
