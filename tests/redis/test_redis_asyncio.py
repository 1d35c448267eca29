"""Publishing to Redis through asyncio: the backend's own pipelined connection on the event loop."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import quote

import pytest
import redis

import bridgeq
import bridgeq.aio as aio
from bridgeq.errors import ConfigError, ConnectionLost, PublishError
from bridgeq.testing.targets import with_options


def key(topic: str) -> str:
    return f"bridgeq:{topic}"


def plain(url: str) -> str:
    return url.split("?")[0]


def test_asyncio_publishes_the_same_entries_as_threads(redis_url, topic, raw) -> None:
    async def publish() -> list[str]:
        async with aio.connect(redis_url) as broker:
            assert broker.sync.backend.publishes_async
            return [
                await broker.publish(topic, b"one", headers={"kind": "a"}, key="k1"),
                *await broker.publish_batch(topic, [b"two", bridgeq.Message(b"three", {"kind": "c"})]),
            ]

    ids = asyncio.run(publish())
    with bridgeq.connect(redis_url) as broker:
        broker.publish(topic, b"four", headers={"kind": "a"}, key="k1")
    entries = [fields for _, fields in raw.xrange(key(topic))]
    assert [e[b"ce_id"].decode() for e in entries[:3]] == ids
    assert entries[0].keys() == entries[3].keys(), "the same stream fields, whichever API published"
    assert [e[b"body"] for e in entries] == [b"one", b"two", b"three", b"four"]
    assert entries[2][b"kind"] == b"c" and entries[0][b"key"] == b"k1"


def test_concurrent_publishes_share_one_connection_and_keep_each_order(redis_url, topic, raw) -> None:
    async def publish() -> list[list[str]]:
        async with aio.connect(redis_url) as broker:
            tasks = [broker.publish_batch(topic, [f"{task}:{n}".encode() for n in range(50)]) for task in range(20)]
            return list(await asyncio.gather(*tasks))

    batches = asyncio.run(publish())
    bodies = [fields[b"body"].decode() for _, fields in raw.xrange(key(topic))]
    assert len(bodies) == 1000 and len({i for ids in batches for i in ids}) == 1000
    for task in range(20):
        assert [b for b in bodies if b.startswith(f"{task}:")] == [f"{task}:{n}" for n in range(50)]


def test_the_database_number_is_selected(redis_url, topic) -> None:
    url = plain(redis_url).rsplit("/", 1)[0] + "/4"

    async def publish() -> None:
        async with aio.connect(url) as broker:
            await broker.publish(topic, b"in db 4")

    asyncio.run(publish())
    other = redis.Redis.from_url(url)
    try:
        assert other.xlen(key(topic)) == 1
    finally:
        other.delete(key(topic))
        other.close()


def test_a_refused_xadd_is_a_publish_error_naming_every_message(redis_url, topic, raw) -> None:
    raw.set(key(topic), "not a stream")

    async def publish() -> None:
        async with aio.connect(redis_url) as broker:
            with pytest.raises(PublishError, match="WRONGTYPE") as info:
                await broker.publish_batch(topic, [bridgeq.Message(b"a", id="m-1"), bridgeq.Message(b"b", id="m-2")])
            assert info.value.message_ids == ("m-1", "m-2")
            await broker.publish(f"{topic}-ok", b"the connection is still in step")

    try:
        asyncio.run(publish())
        assert raw.xlen(key(f"{topic}-ok")) == 1
    finally:
        raw.delete(key(topic), key(f"{topic}-ok"))


def test_a_dropped_connection_is_reopened_before_the_next_publish(private_server) -> None:
    url = f"redis://:{quote(private_server.password, safe='')}@127.0.0.1:{private_server.port}/0"
    admin = redis.Redis(port=private_server.port, password=private_server.password)

    async def publish() -> None:
        async with aio.connect(url) as broker:
            await broker.publish("dropped", b"before")
            admin.client_kill_filter(_type="normal", skipme=True)  # a private server: only ours
            await asyncio.sleep(0.1)
            await broker.publish("dropped", b"after")

    try:
        asyncio.run(publish())
        assert [f[b"body"] for _, f in admin.xrange(key("dropped"))] == [b"before", b"after"]
    finally:
        admin.delete(key("dropped"))
        admin.close()


def test_a_connection_lost_mid_reply_is_connection_lost_stored_or_not() -> None:
    async def scenario() -> None:
        async def answer_the_handshake_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            await reader.read(1024)
            writer.write(b"+OK\r\n")
            await reader.read(1024)  # the XADD
            writer.close()

        server = await asyncio.start_server(answer_the_handshake_then_hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, aio.connect(f"redis://127.0.0.1:{port}/0") as broker:
            with pytest.raises(ConnectionLost, match="stored or not: unknown"):
                await broker.publish("t", b"x")

    asyncio.run(scenario())


def test_one_backend_serves_one_loop_after_another(redis_url, topic, raw) -> None:
    with bridgeq.connect(redis_url) as broker:
        for n in range(2):
            asyncio.run(broker.backend.publish_async(topic, [bridgeq.Message(b"%d" % n)]))
    assert raw.xlen(key(topic)) == 2


def test_connection_refused_is_connection_lost_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def publish() -> None:
        async with aio.connect(f"redis://:hunter2@127.0.0.1:{port}/0?connect_timeout=1") as broker:
            await broker.publish("t", b"x")

    with pytest.raises(ConnectionLost) as info:
        asyncio.run(publish())
    assert "hunter2" not in str(info.value) + repr(info.value)


def test_password_wrong_password_and_tls(private_server) -> None:
    pw = quote(private_server.password, safe="")
    ca = private_server.certs / "ca.crt"

    async def publish(url: str) -> str:
        async with aio.connect(url) as broker:
            return await broker.publish("t", b"x")

    asyncio.run(publish(f"redis://:{pw}@127.0.0.1:{private_server.port}/0"))
    with pytest.raises(ConfigError) as info:
        asyncio.run(publish(f"redis://:wrong-{pw}@127.0.0.1:{private_server.port}/0"))
    assert pw not in str(info.value) and private_server.password not in str(info.value)
    tls = f"rediss://:{pw}@localhost:{private_server.tls_port}/0"
    asyncio.run(publish(with_options(tls, tls_ca_file=str(ca))))
    with pytest.raises(ConnectionLost, match=r"(?i)certificate"):
        asyncio.run(publish(tls))
    asyncio.run(publish(with_options(tls, tls_insecure="true")))
