"""RESP2 written and read here, on redis-py's pooled connections: the hot commands' own path.

redis-py runs every argument through a generic encoder, keeps per-command
bookkeeping, and parses replies one element at a time through several method
calls: for a batch of small XADDs, or an XREADGROUP reply of a thousand
entries, that is most of the client's time. Here the arguments (already bytes)
are packed directly, and replies are parsed from whole buffers by ``Parser``,
which the asyncio link shares. The connections, their handshake and their
health stay redis-py's. Nothing here is retried: a write whose reply was lost
may have been applied.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import redis
from redis._parsers import BaseParser

_CRLF = b"\r\n"
_LARGE = 1 << 14  # longer values are sent as their own buffer, not copied into the batch
_READ = 1 << 16  # bytes asked of the socket at a time, more for a long bulk string
_READ_MOST = 1 << 20

INCOMPLETE: Final = object()
"""What ``Parser.reply`` returns while the next reply has not wholly arrived."""

error = BaseParser.parse_error
"""An error reply's text as redis-py's exception for it (NOPERM -> NoPermissionError, ...)."""


def pack(commands: Iterable[Sequence[bytes]]) -> list[bytes]:
    """The RESP encoding of ``commands`` (each a sequence of bytes arguments), in few buffers."""
    out: list[bytes] = []
    buf: list[bytes] = []
    for args in commands:
        buf.append(b"*%d\r\n" % len(args))
        for arg in args:
            size = len(arg)
            if size > _LARGE:
                buf.append(b"$%d\r\n" % size)
                out.append(b"".join(buf))
                out.append(arg)
                buf = [_CRLF]
            else:
                buf += (b"$%d\r\n" % size, arg, _CRLF)
    out.append(b"".join(buf))
    return out


Shortcut = Callable[[bytes, int], "tuple[Any, int] | None"]
"""Reads, at an array's start, a value of a shape its caller knows well: (value, where it ends), or None."""


class Parser:
    """RESP2 replies out of bytes fed as they arrive: bulk strings as bytes, integers as ints,
    arrays as lists, nil as None, error replies as redis-py exception instances (not raised).

    A reply may arrive in any number of pieces; an array's elements read so far are kept
    between feeds, and the pieces of a long bulk string are joined once, when all are in.
    A ``shortcut`` is tried at each array: what it reads stands for the array.
    """

    __slots__ = ("_data", "_fed", "_open", "_pieces", "_pos", "_shortcut", "needed")

    def __init__(self, shortcut: Shortcut | None = None) -> None:
        self._data = b""
        self._pos = 0
        self._pieces: list[bytes] = []  # fed, not yet joined to _data
        self._fed = 0  # their length
        self._open: list[tuple[list[Any], int]] = []  # arrays being read: elements so far, elements left
        self._shortcut = shortcut
        self.needed = 1
        """Bytes that must still arrive before ``reply`` can go on (at least)."""

    def feed(self, data: bytes) -> None:
        self._pieces.append(data)
        self._fed += len(data)

    def unread(self) -> int:
        """Bytes fed and not yet part of a reply returned."""
        return len(self._data) - self._pos + self._fed

    def reply(self) -> Any:
        """The next whole reply, or INCOMPLETE; raises InvalidResponse on bytes that are not RESP2."""
        if self._pieces:
            if self._fed < self.needed:
                return INCOMPLETE
            self._data = b"".join([self._data[self._pos :], *self._pieces])
            self._pos, self._fed = 0, 0
            self._pieces.clear()
        try:
            return self._parse(self._data, self._pos)
        except ValueError as exc:  # a length or integer that is not one
            raise redis.InvalidResponse(f"not a RESP2 reply: {exc}") from None

    def _parse(self, data: bytes, pos: int) -> Any:
        outer, shortcut = self._open, self._shortcut
        items, left = outer.pop() if outer else (None, 0)  # the innermost array open, if any
        value: Any
        while True:
            end = data.find(_CRLF, pos)
            if end < 0:
                return self._short(pos, 1, items, left)
            kind = data[pos]
            if kind == 36:  # $ bulk string
                size = int(data[pos + 1 : end])
                if size < 0:
                    value, pos = None, end + 2
                else:
                    stop = end + 2 + size
                    if stop + 2 > len(data):
                        return self._short(pos, stop + 2 - len(data), items, left)
                    value, pos = data[end + 2 : stop], stop + 2
            elif kind == 42:  # * array
                if shortcut is not None and (read := shortcut(data, pos)) is not None:
                    value, pos = read
                else:
                    count = int(data[pos + 1 : end])
                    pos = end + 2
                    if count > 0:
                        if items is not None:
                            outer.append((items, left))
                        items, left = [], count
                        continue
                    value = None if count < 0 else []
            elif kind == 58:  # : integer
                value, pos = int(data[pos + 1 : end]), end + 2
            elif kind == 43:  # + simple string
                value, pos = data[pos + 1 : end], end + 2
            elif kind == 45:  # - error
                value, pos = error(data[pos + 1 : end].decode(errors="replace")), end + 2
            else:
                raise redis.InvalidResponse(f"not a RESP2 reply: {data[pos : pos + 40]!r}")
            while items is not None:  # the value is an element: perhaps the last of arrays
                items.append(value)
                left -= 1
                if left:
                    break
                value = items
                items, left = outer.pop() if outer else (None, 0)
            else:
                self._pos, self.needed = pos, 1
                return value

    def _short(self, pos: int, needed: int, items: list[Any] | None, left: int) -> Any:
        if items is not None:
            self._open.append((items, left))
        self._pos, self.needed = pos, needed
        return INCOMPLETE


def read(sock: socket.socket, count: int, shortcut: Shortcut | None = None) -> list[Any]:
    """``count`` replies read from ``sock``; connection trouble as redis-py's exceptions."""
    parser = Parser(shortcut)
    replies = _replies(sock, parser, count)
    if parser.unread():
        raise redis.InvalidResponse("Redis sent more than the replies asked for")
    return replies


def _replies(sock: socket.socket, parser: Parser, count: int) -> list[Any]:
    """The next ``count`` replies through ``parser``, fed from ``sock`` as needed."""
    replies = list[Any]()
    try:
        while len(replies) < count:
            reply = parser.reply()
            if reply is not INCOMPLETE:
                replies.append(reply)
                continue
            data = sock.recv(max(_READ, min(parser.needed, _READ_MOST)))
            if not data:
                raise redis.ConnectionError("Connection closed by server.")
            parser.feed(data)
    except TimeoutError as exc:  # socket.timeout
        raise redis.TimeoutError("Timeout reading from socket") from exc
    except OSError as exc:
        raise redis.ConnectionError(f"Error while reading from socket: {exc}") from exc
    return replies


def _connection(pool: redis.ConnectionPool) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py 5 names the command
        return pool.get_connection("XADD")


class InFlight:
    """A pooled connection held while the replies to commands sent on it are still to come, so that
    Redis works on them while this client does something else (a fetch read ahead). More commands
    may follow before the replies are read; the replies come in order. On any error the connection
    is closed: the replies still to come are lost."""

    def __init__(self, pool: redis.ConnectionPool, shortcut: Shortcut | None = None) -> None:
        self._pool = pool
        self._connection: Any = _connection(pool)
        self._parser = Parser(shortcut)
        self.expected = 0
        """Replies sent for and not yet read."""

    def send(self, commands: Sequence[Sequence[bytes]]) -> None:
        connection = self._held()
        try:
            connection.send_packed_command(pack(commands), check_health=False)
            if connection._sock is None:  # closed by the send: its error was raised already
                raise redis.ConnectionError("the connection closed")
        except BaseException:
            self.discard()
            raise
        self.expected += len(commands)

    def read(self, count: int) -> list[Any]:
        """The next ``count`` replies, errors as values (but raised where the connection is unusable)."""
        connection = self._held()
        try:
            replies = _replies(connection._sock, self._parser, count)
            for reply in replies:
                if isinstance(reply, redis.ConnectionError):
                    raise reply
        except BaseException:
            self.discard()
            raise
        self.expected -= count
        return replies

    def release(self) -> None:
        """Give the connection back (closed first unless every reply was read). Idempotent."""
        if self._connection is not None and (self.expected or self._parser.unread()):
            self._connection.disconnect()
        self._give_back()

    def discard(self) -> None:
        """Close the connection and give it back. Idempotent."""
        if self._connection is not None:
            self._connection.disconnect()
        self._give_back()

    def _held(self) -> Any:
        if self._connection is None:
            raise redis.ConnectionError("the connection was given back")
        return self._connection

    def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)


def send(pool: redis.ConnectionPool, chunks: list[bytes], replies: int, shortcut: Shortcut | None = None) -> list[Any]:
    """Write ``chunks`` on one pooled connection; return ``replies`` replies, errors as values
    (but raise those that mean the connection is unusable, as redis-py does)."""
    connection = _connection(pool)
    try:
        connection.send_packed_command(chunks, check_health=False)
        if connection._sock is None:  # closed by the send: its error was raised already
            raise redis.ConnectionError("the connection closed")
        results = read(connection._sock, replies, shortcut)
    except BaseException:
        connection.disconnect()  # mid-reply: never hand this connection out again
        raise
    finally:
        pool.release(connection)
    for result in results:
        if isinstance(result, redis.ConnectionError):
            raise result
    return results


def call(
    pool: redis.ConnectionPool,
    command: Sequence[bytes],
    shortcut: Shortcut | None = None,
    before: Sequence[bytes] | None = None,
) -> Any:
    """The reply to ``command`` (sent just after ``before``, if given, in the same write); an error
    reply to either raised."""
    commands = (command,) if before is None else (before, command)
    replies = send(pool, pack(commands), len(commands), shortcut)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[-1]
