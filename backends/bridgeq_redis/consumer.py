"""RedisConsumer: one member of a consumer group, reading with XREADGROUP, settling with XACK."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from bridgeq.message import EMPTY_HEADERS
from bridgeq.spi import BackendConsumer, Delivery, translate_errors
from bridgeq.wire import ID_HEADER

from . import resp
from .errors import ERRORS, NotConnected, is_group_gone
from .scripts import REQUEUED_IDLE_MS

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("bridgeq.redis")

CLAIM_BATCH = 1000
_ID = ID_HEADER.encode()


class RedisConsumer(BackendConsumer):
    """A consumer named ``<host>-<pid>-<random>``; its unacked entries are tracked to renew them."""

    def __init__(self, backend: RedisBackend, topic: str, group: str) -> None:
        self._backend = backend
        self._topic, self._group = topic, group
        self._key = backend.key(topic)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._held: set[bytes] = set()  # entry ids delivered and not yet acked or handed back
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        self._closed = False
        self._context = f"reading {topic!r} as {group!r}"
        self._stream_group = (self._key.encode(), group.encode())
        self._read = [b"XREADGROUP", b"GROUP", group.encode(), self.name.encode(), b"COUNT"]
        self._streams = (b"STREAMS", self._stream_group[0], b">")
        self._ahead: resp.InFlight | None = None  # an XREADGROUP sent and not yet read (see ack_and_fetch)

    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        return self.ack_and_fetch((), max_messages, timeout)

    def ack_and_fetch(
        self, acks: Sequence[Delivery], max_messages: int, timeout: float, ahead: int = 0
    ) -> list[Delivery]:
        """The XACK goes just ahead of the XREADGROUP, on the same connection: one round trip. With
        ``ahead``, after a full batch the next XREADGROUP (without BLOCK) is sent at once and its reply
        read on the next call, so Redis serves it while this batch is handled."""
        if self._ahead is not None:
            due = time.monotonic() >= self._next_sweep  # then take the read-ahead and sweep on the next call
            rows = self._take_ahead(acks, 0 if due else ahead)
            acks = ()
            if rows:
                return self._deliveries(rows)
        now = time.monotonic()
        if now >= self._next_sweep:
            if acks:
                self.ack(acks)
                acks = ()
            claimed = self._sweep(max_messages)
            if claimed:  # perhaps more are waiting: sweep again next time
                return claimed
            self._next_sweep = now + self._backend.sweep_seconds
        with translate_errors(ERRORS, self._context):
            try:
                reply = self._backend.call(
                    self._fetch(max_messages, min(int(timeout * 1000), self._backend.max_block_ms)),
                    self._xack(acks) if acks else None,
                )
            except redis.ResponseError as exc:
                return self._regroup_or_raise(exc)
            rows = reply[0][1] if reply else []  # [[entry id, [field, value, ...]], ...]
            if ahead and len(rows) >= max_messages:
                self._read_ahead(ahead)
        return self._deliveries(rows)

    def _read_ahead(self, count: int) -> None:
        """Send the next XREADGROUP now; if that fails, read on as without read-ahead (the entries just
        read are returned all the same: dropped, they would wait claim_idle_ms to come again)."""
        try:
            self._ahead = resp.InFlight(self._backend.client.connection_pool)
            self._ahead.send([self._fetch(count, 0)])
        except (redis.ConnectionError, redis.TimeoutError, NotConnected) as exc:
            self._ahead = None
            log.debug("%s: reading ahead failed (the next fetch reads as usual): %r", self._context, exc)

    def _fetch(self, count: int, block_ms: int) -> list[bytes]:
        """An XREADGROUP of up to ``count`` new entries, waiting up to ``block_ms`` for the first (0: not)."""
        command = [*self._read, b"%d" % count]
        if block_ms > 0:
            command += (b"BLOCK", b"%d" % block_ms)
        command += self._streams
        return command

    def _take_ahead(self, acks: Sequence[Delivery], ahead: int) -> list[Any]:
        """The entries of the XREADGROUP read ahead. ``acks`` and, with ``ahead``, the next read-ahead go
        out on its connection first, so they queue behind it; once nothing more is waiting, both are
        read now and the connection goes back to the pool."""
        in_flight, self._ahead = self._ahead, None
        assert in_flight is not None
        commands = [self._xack(acks)] if acks else []
        if ahead:
            commands.append(self._fetch(ahead, 0))
        with translate_errors(ERRORS, self._context):
            try:
                if commands:
                    in_flight.send(commands)
                rows = self._rows(in_flight.read(in_flight.expected - len(commands)))
                if rows and ahead:
                    self._ahead = in_flight
                    return rows
                rows += self._rows(in_flight.read(in_flight.expected))
                in_flight.release()
            except BaseException as exc:
                in_flight.discard()  # what it had read stays pending, and is claimed once idle
                if isinstance(exc, redis.ResponseError):
                    return self._regroup_or_raise(exc)
                raise
        return rows

    @staticmethod
    def _rows(replies: list[Any]) -> list[Any]:
        """The entries in XREADGROUP replies (XACK replies among them say nothing); an error reply raised."""
        rows: list[Any] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            if type(reply) is list:
                rows += reply[0][1]
        return rows

    def _deliveries(self, rows: list[Any]) -> list[Delivery]:
        """Deliveries of XREADGROUP's entries (first deliveries), held from now on."""
        deliver, topic, group, body = self._delivery, self._topic, self._group, self._backend.body_field
        deliveries = [
            Delivery(fields[1].decode(errors="replace"), fields[3], EMPTY_HEADERS, None, topic, group, 1, entry_id)
            if len(fields) == 4 and fields[0] == _ID and fields[2] == body  # bridgeq's own layout, keyless, headerless
            else deliver(entry_id, fields, 1)
            for entry_id, fields in rows
        ]
        with self._lock:
            self._held.update([entry[0] for entry in rows])
        return deliveries

    def _sweep(self, max_messages: int) -> list[Delivery]:
        """Claim entries handed back or idle past claim_idle_ms, with their exact delivery counts."""
        with translate_errors(ERRORS, f"claiming idle entries of {self._topic!r} as {self._group!r}"):
            try:
                claimed = self._backend.claim(self._key, self._group, self.name, min(max_messages, CLAIM_BATCH))
            except redis.ResponseError as exc:
                return self._regroup_or_raise(exc)
        if not claimed:
            return []
        deliver = self._delivery
        deliveries = [deliver(entry_id, fields, count) for entry_id, count, fields in claimed]
        with self._lock:
            self._held.update([entry[0] for entry in claimed])
        return deliveries

    def _delivery(self, entry_id: bytes, fields: list[bytes], attempt: int) -> Delivery:
        """A Delivery from an entry's flat field list (see the package docstring for the layout); a keyless,
        headerless entry in bridgeq's own layout is built straight away in ``_deliveries``."""
        body_field, key_field = self._backend.body_field, self._backend.key_field
        mid: bytes | None = None
        body, key, headers = b"", None, {}
        pairs = iter(fields)
        for name, value in zip(pairs, pairs, strict=True):
            if name == _ID:
                mid = value
            elif name == body_field:
                body = value
            elif name == key_field:
                key = value.decode(errors="replace")
            else:
                headers[name.decode(errors="replace")] = value.decode(errors="replace")
        return Delivery(
            f"{self._key}-{entry_id.decode()}" if mid is None else mid.decode(errors="replace"),
            body,
            headers or EMPTY_HEADERS,
            key,
            self._topic,
            self._group,
            attempt,
            entry_id,
        )

    def _regroup_or_raise(self, exc: redis.ResponseError) -> list[Delivery]:
        """No deliveries this time if the stream or group was deleted under us (made again); else raise."""
        if not is_group_gone(exc):
            raise exc
        self._regroup(exc)
        return []

    def _regroup(self, exc: BaseException) -> None:
        """The stream or group was deleted under us: make it again (never loops: once per call)."""
        log.warning("%s: %s; re-creating the group (messages not yet acked were lost with it)", self._context, exc)
        with self._lock:
            self._held.clear()
        self._backend.declare(self._topic, self._group)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with translate_errors(ERRORS, f"acking {len(deliveries)} message(s) of {self._topic!r} for {self._group!r}"):
            self._backend.call(self._xack(deliveries))

    def _xack(self, deliveries: Sequence[Delivery]) -> list[bytes]:
        """The XACK of ``deliveries``, no longer held from here on (even if it fails: unrenewed, they
        will be claimed and redelivered)."""
        ids = [d.token for d in deliveries]
        with self._lock:
            self._held.difference_update(ids)
        return [b"XACK", *self._stream_group, *ids]

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        ids = [d.token for d in deliveries]
        with self._lock:
            self._held.difference_update(ids)
        self._hand_back(ids, leave=False)
        self._next_sweep = 0.0  # redeliver them on our next fetch if no other member was faster

    def renew(self) -> None:
        """Reset the idle time of the entries we hold, so no other member claims them."""
        with self._lock:
            ids = list(self._held)
        if ids and not self._closed:
            with translate_errors(ERRORS, f"renewing claims on {self._topic!r} for {self._group!r}"):
                try:
                    self._backend.settle(self._key, self._group, self.name, ids, 0, leave=False)
                except redis.ResponseError as exc:
                    if not is_group_gone(exc):
                        raise

    def _hand_back(self, ids: Sequence[bytes], leave: bool) -> None:
        if not ids and not leave:
            return
        with translate_errors(ERRORS, f"requeueing {len(ids)} message(s) of {self._topic!r} for {self._group!r}"):
            try:
                self._backend.settle(self._key, self._group, self.name, ids, REQUEUED_IDLE_MS, leave)
            except redis.ResponseError as exc:
                if not is_group_gone(exc):  # gone with the group: nothing to hand back
                    raise

    def close(self) -> None:
        """Hand unacked entries back (claimable at once) and leave the group if nothing is pending."""
        if self._closed:
            return
        self._closed = True
        self._backend.forget(self)
        in_flight, self._ahead = self._ahead, None
        if in_flight is not None:  # what it read goes back with the rest
            try:
                self._held.update([entry[0] for entry in self._rows(in_flight.read(in_flight.expected))])
                in_flight.release()
            except Exception:  # they stay pending and are claimed after claim_idle_ms
                in_flight.discard()
        with self._lock:
            ids, self._held = list(self._held), set()
        try:
            self._hand_back(ids, leave=True)
        except Exception as exc:  # they stay pending and are claimed after claim_idle_ms
            log.warning("%s: could not hand back %d message(s) on close: %r", self._context, len(ids), exc)

    def __repr__(self) -> str:
        return f"<RedisConsumer {self._key!r} group={self._group!r} name={self.name!r}>"
