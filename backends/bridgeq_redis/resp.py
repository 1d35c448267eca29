"""RESP2 written and read here, on redis-py's pooled connections: the hot commands' own path.

redis-py runs every argument through a generic encoder, keeps per-command
bookkeeping, and turns an XREADGROUP reply into tuples and dicts entry by
entry: for a batch of small XADDs, or an XREADGROUP reply of a thousand
entries, that is most of the client's time. Here the arguments (already bytes)
are packed directly, and replies are read by hiredis (C, the parser redis-py
itself uses when it is installed) straight into lists and bytes, which the
asyncio link shares. The connections, their handshake and their health stay
redis-py's. Nothing here is retried: a write whose reply was lost may have been
applied.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any, Final

import hiredis
import redis
from redis._parsers import BaseParser

from .errors import REFUSED, NotConnected

_CRLF = b"\r\n"
_LARGE = 1 << 14  # longer values are sent as their own buffer, not copied into the batch
_READ = 1 << 16  # bytes asked of the socket at a time (a larger buffer would be mapped and unmapped each time)

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


class Parser:
    """RESP2 replies out of bytes fed as they arrive, read by hiredis: bulk strings as bytes, integers
    as ints, arrays as lists, nil as None, error replies as redis-py's exception instances (returned,
    not raised; NOPERM -> NoPermissionError, ...). Bytes that are not RESP2 raise InvalidResponse."""

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=redis.InvalidResponse, replyError=error)

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def reply(self) -> Any:
        """The next whole reply, or INCOMPLETE."""
        reply = self._reader.gets()
        return INCOMPLETE if reply is False else reply

    def unread(self) -> bool:
        """Whether bytes were fed that are not part of a reply returned yet."""
        return bool(self._reader.has_data())


def read(sock: socket.socket, count: int) -> list[Any]:
    """``count`` replies read from ``sock``; connection trouble as redis-py's exceptions."""
    parser = Parser()
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
            data = sock.recv(_READ)
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
        try:
            return pool.get_connection()
        except TypeError:  # redis-py 5 names the command
            return pool.get_connection("XADD")
    except (redis.exceptions.MaxConnectionsError, *REFUSED):
        raise  # not a failure to connect: the pool is full, or the server refuses these credentials
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise NotConnected(f"{type(exc).__name__}: {exc}") from exc


class InFlight:
    """A pooled connection held while the replies to commands sent on it are still to come, so that
    Redis works on them while this client does something else (a fetch read ahead). More commands
    may follow before the replies are read; the replies come in order. On any error the connection
    is closed: the replies still to come are lost."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._connection: Any = _connection(pool)
        self._parser = Parser()
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


def send(pool: redis.ConnectionPool, chunks: list[bytes], replies: int) -> list[Any]:
    """Write ``chunks`` on one pooled connection; return ``replies`` replies, errors as values
    (but raise those that mean the connection is unusable, as redis-py does)."""
    connection = _connection(pool)
    try:
        connection.send_packed_command(chunks, check_health=False)
        if connection._sock is None:  # closed by the send: its error was raised already
            raise redis.ConnectionError("the connection closed")
        results = read(connection._sock, replies)
    except BaseException:
        connection.disconnect()  # mid-reply: never hand this connection out again
        raise
    finally:
        pool.release(connection)
    for result in results:
        if isinstance(result, redis.ConnectionError):
            raise result
    return results


def call(pool: redis.ConnectionPool, command: Sequence[bytes], before: Sequence[bytes] | None = None) -> Any:
    """The reply to ``command`` (sent just after ``before``, if given, in the same write); an error
    reply to either raised."""
    commands = (command,) if before is None else (before, command)
    replies = send(pool, pack(commands), len(commands))
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[-1]
