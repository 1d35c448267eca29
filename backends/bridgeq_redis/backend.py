"""RedisBackend: connections, declare, publish, depth, totals, delete."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.retry import Retry

from bridgeq.errors import ConfigError, PublishError
from bridgeq.spi import Backend, BackendConsumer, BrokerURL, Capabilities, Message, Totals, translate_errors
from bridgeq.wire import ID_HEADER

from . import resp, scripts
from .aio_link import AsyncLink
from .consumer import RedisConsumer
from .errors import ERRORS, RETRYABLE
from .options import RedisOptions

log = logging.getLogger("bridgeq.redis")

_ID_FIELD = ID_HEADER.encode()

SWEEP_SECONDS = 0.5
"""How often a consumer looks for entries to claim (handed back, or idle past claim_idle_ms)."""


class RedisBackend(Backend):
    """Redis Streams through redis-py; see the package docstring for the layout."""

    options_type = RedisOptions

    def __init__(self, url: BrokerURL, options: object) -> None:
        if not isinstance(options, RedisOptions):
            raise ConfigError(f"{url.scheme}:// needs RedisOptions, not {type(options).__name__}")
        self.options = o = options
        self.claim_idle_ms = o.claim_idle_ms
        self.sweep_seconds = min(SWEEP_SECONDS, o.claim_idle_ms / 4000)
        # a BLOCK ends up to 0.2 s late (Redis's clock): its reply must still come within socket_timeout
        self.max_block_ms = int(o.socket_timeout * 1000) - 300
        self.body_field, self.key_field = o.body_field.encode(), o.key_field.encode()
        self._reserved = {o.body_field, o.key_field}
        self.start_id = "0" if o.group_start == "earliest" else "$"
        if o.maxlen is not None:
            self._trim: list[bytes] = [b"MAXLEN", b"~", b"%d" % o.maxlen]
        else:
            self._trim = []
        params = self._connection_params(url, o)
        retry = Retry(EqualJitterBackoff(cap=1.0, base=0.05), o.retries, supported_errors=RETRYABLE)
        self.client = redis.Redis(retry=retry, **params)
        self._retry = retry
        # XADD is not idempotent: a blind retry after a lost reply would add the entry twice.
        self._publish_pool = redis.Redis(retry=Retry(NoBackoff(), 0), **params).connection_pool
        self._async_link = AsyncLink(params)
        self._claim = self.client.register_script(scripts.CLAIM)
        self._settle = self.client.register_script(scripts.SETTLE)
        self._declare_topic = self.client.register_script(scripts.DECLARE_TOPIC)
        self._consumers: weakref.WeakSet[RedisConsumer] = weakref.WeakSet()
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.capabilities = Capabilities(
            consumer_groups=True,
            persistent=True,
            replay=o.group_start == "earliest",
            ordered_per_key=True,
            crash_redelivery=True,
            crash_redelivery_seconds=o.claim_idle_ms / 1000 + self.sweep_seconds + 1.0,
            exact_delivery_count=True,
            depth=True,
            max_message_size=o.max_message_size,
            stable_foreign_ids=True,
        )

    @staticmethod
    def _connection_params(url: BrokerURL, o: RedisOptions) -> dict[str, Any]:
        if len(url.hosts) > 1:
            raise ConfigError(f"{url.scheme}:// takes one host (no Cluster or Sentinel support)")
        host = url.hosts[0] if url.hosts else None
        path = url.path.strip("/")
        if path and not (path.isascii() and path.isdigit()):
            raise ConfigError(f"{url.scheme}:// path must be a database number like /0, got {path[:20]!r}")
        params: dict[str, Any] = {
            "host": host.name if host else "localhost",
            "port": (host.port if host else None) or 6379,
            "db": int(path or 0),
            "username": url.username,
            "password": url.password,
            "socket_timeout": o.socket_timeout,
            "socket_connect_timeout": o.connect_timeout,
            "client_name": "bridgeq",
            "max_connections": o.max_connections,
            "protocol": 2,  # reply shapes differ under RESP3 and across redis-py versions
        }
        tls_options = o.tls_ca_file or o.tls_cert_file or o.tls_key_file or o.tls_insecure
        if url.scheme == "rediss":
            params.update(
                ssl=True,
                ssl_cert_reqs="none" if o.tls_insecure else "required",
                ssl_check_hostname=not o.tls_insecure,
                ssl_ca_certs=o.tls_ca_file,
                ssl_certfile=o.tls_cert_file,
                ssl_keyfile=o.tls_key_file,
            )
        elif tls_options:
            raise ConfigError("the tls_* options need a rediss:// URL")
        return params

    def key(self, topic: str) -> str:
        return self.options.prefix + topic

    # -- topics and groups -------------------------------------------------------------

    def declare(self, topic: str, group: str | None) -> None:
        key = self.key(topic)
        with translate_errors(ERRORS, f"declaring {topic!r}" + (f" for group {group!r}" if group else "")):
            if group is None:
                self._declare_topic(keys=[key])
                return
            try:
                self.client.execute_command("XGROUP", "CREATE", key, group, self.start_id, "MKSTREAM")
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):  # the group exists: fine
                    raise ConfigError(f"stream {key!r} cannot hold group {group!r}: {exc}") from exc

    def delete(self, topic: str) -> None:
        with translate_errors(ERRORS, f"deleting {topic!r}"):
            self.client.delete(self.key(topic))

    # -- publishing --------------------------------------------------------------------

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        commands = self._xadds(topic, messages)
        with translate_errors(ERRORS, _publishing(topic, messages)):
            results = resp.send(self._publish_pool, resp.pack(commands), len(commands))
        _refused(topic, messages, results)

    publishes_async = True

    async def publish_async(self, topic: str, messages: Sequence[Message]) -> None:
        commands = self._xadds(topic, messages)
        with translate_errors(ERRORS, _publishing(topic, messages)):
            results = await self._async_link.call(commands)
        _refused(topic, messages, results)

    async def close_async(self) -> None:
        self._async_link.close()

    def _xadds(self, topic: str, messages: Sequence[Message]) -> list[list[bytes]]:
        """One XADD per message: its id, body, key and headers as stream fields."""
        head = [b"XADD", self.key(topic).encode(), *self._trim]
        if self.options.max_age_ms is not None:
            head += [b"MINID", b"~", b"%d" % (time.time() * 1000 - self.options.max_age_ms)]
        head += [b"*", _ID_FIELD]
        body_field, key_field = self.body_field, self.key_field
        commands = []
        for m in messages:
            args = [*head, m.id.encode(), body_field, m.body]
            if m.key is not None:
                args += (key_field, m.key.encode())
            if m.headers:
                if not self._reserved.isdisjoint(m.headers):
                    raise ConfigError(
                        f"message {m.id!r}: headers {sorted(self._reserved & set(m.headers))} collide with the "
                        "stream fields for body and key (options body_field, key_field)"
                    )
                for name, value in m.headers.items():
                    args += (name.encode(), value.encode())
            commands.append(args)
        return commands

    # -- consuming ---------------------------------------------------------------------

    def consumer(self, topic: str, group: str, prefetch: int) -> BackendConsumer:
        self.declare(topic, group)
        consumer = RedisConsumer(self, topic, group)
        if self.options.renew:
            with self._lock:
                self._consumers.add(consumer)
                if self._renewer is None:
                    self._renewer = threading.Thread(target=self._renew_loop, name="bridgeq-redis-renew", daemon=True)
                    self._renewer.start()
        return consumer

    def forget(self, consumer: RedisConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def _renew_loop(self) -> None:
        """Keep live consumers' unacked entries from looking idle, so nobody claims them."""
        while not self._closing.wait(self.claim_idle_ms / 3000):
            with self._lock:
                consumers = list(self._consumers)
            for consumer in consumers:
                try:
                    consumer.renew()
                except Exception as exc:
                    log.warning("renewing the claims of %r failed (retried soon): %r", consumer, exc)

    def call(self, command: Sequence[bytes], before: Sequence[bytes] | None = None) -> Any:
        """The reply to a hot command (XREADGROUP, XACK), read by ``resp``, with ``before`` sent just
        ahead of it in the same round trip; retried after connection errors like redis-py's commands
        (so never XADD)."""
        pool = self.client.connection_pool
        return self._retry.call_with_retry(lambda: resp.call(pool, command, before), _ignore)

    def claim(self, key: str, group: str, name: str, count: int) -> list[list[Any]]:
        claimed: list[list[Any]] = self._claim(keys=[key], args=[group, name, self.claim_idle_ms, count])
        return claimed

    def settle(self, key: str, group: str, name: str, ids: Sequence[bytes], idle_ms: int, leave: bool) -> None:
        self._settle(keys=[key], args=[group, name, idle_ms, int(leave), *ids])

    # -- the queue model ---------------------------------------------------------------

    def _waiting(self, topic: str, group: str) -> tuple[int, int, int] | None:
        """(entries ever added, entries waiting for the group, pending), from one round trip.

        Redis's ``lag`` over-counts once unread entries are trimmed (7.0); the
        stream's length bounds it. None when the lag is unknown.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.xinfo_groups(self.key(topic))
        pipe.xinfo_stream(self.key(topic))
        groups, stream = pipe.execute(raise_on_error=False)
        if isinstance(groups, redis.ResponseError) and "no such key" in str(groups):
            return 0, 0, 0
        for reply in (groups, stream):
            if isinstance(reply, Exception):
                raise reply
        info = next((g for g in groups if g["name"] == group.encode()), None)
        added = int(stream.get("entries-added") or 0)
        if info is None:
            return added, 0, 0
        if info.get("lag") is None:
            return None
        return added, min(int(info["lag"]), int(stream["length"])), int(info["pending"])

    def depth(self, topic: str, group: str) -> int | None:
        with translate_errors(ERRORS, f"reading the depth of {topic!r} for {group!r}"):
            found = self._waiting(topic, group)
        return None if found is None else found[1] + found[2]

    def totals(self, topic: str, group: str) -> Totals | None:
        with translate_errors(ERRORS, f"reading the totals of {topic!r} for {group!r}"):
            found = self._waiting(topic, group)
        if found is None:
            return None
        added, waiting, pending = found
        return Totals(added, added - waiting - pending)

    def close(self) -> None:
        self._closing.set()
        self.client.close()
        self._publish_pool.disconnect()
        self._async_link.close()

    def __repr__(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        return f"<RedisBackend {kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db')}>"


def _publishing(topic: str, messages: Sequence[Message]) -> str:
    return f"publishing {len(messages)} message(s) to {topic!r} (stored or not: unknown)"


def _refused(topic: str, messages: Sequence[Message], results: list[object]) -> None:
    """Raise PublishError naming the messages whose XADD Redis refused."""
    failed = [(m.id, r) for m, r in zip(messages, results, strict=True) if isinstance(r, Exception)]
    if failed:
        raise PublishError(
            f"{len(failed)} of {len(messages)} message(s) to {topic!r} refused: {failed[0][1]}",
            tuple(mid for mid, _ in failed),
        )


def _ignore(error: Exception) -> None:
    """Nothing to do between retries: a connection that failed was dropped already."""
