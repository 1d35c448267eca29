"""resp.Parser (hiredis) and resp.read against redis-py's own pure-Python RESP2 parser, on bytes cut anywhere:
no server needed."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers import _RESP2Parser
from redis._parsers.encoders import Encoder
from redis._parsers.socket import SocketBuffer

from bridgeq_redis import resp

leaves = (
    st.binary(max_size=300).map(lambda b: ("$", b))
    | st.just(("$", None))
    | st.integers(-(2**63), 2**63 - 1).map(lambda n: (":", n))
    | st.text("OKQUEUED ", min_size=1, max_size=10).map(lambda s: ("+", s.encode()))
    | st.sampled_from(["NOGROUP No such key", "NOPERM no", "BUSYGROUP exists", "ERR oops"]).map(lambda e: ("-", e))
)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=6).map(lambda xs: ("*", xs)), max_leaves=40)


def encode(value: tuple[str, Any]) -> bytes:
    kind, body = value
    if kind == "*":
        return b"*%d\r\n" % len(body) + b"".join(encode(v) for v in body)
    if kind == "$":
        return b"$-1\r\n" if body is None else b"$%d\r\n%s\r\n" % (len(body), body)
    if kind == ":":
        return b":%d\r\n" % body
    if kind == "+":
        return b"+%s\r\n" % body
    return b"-%s\r\n" % body.encode()


class Pieces:
    """A socket that hands out ``data`` in the given piece sizes, then the rest at once."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.at = data, list(sizes), 0

    def recv(self, most: int) -> bytes:
        size = min(most, self.sizes.pop(0) if self.sizes else most)
        piece = self.data[self.at : self.at + size]
        self.at += len(piece)
        return piece

    def settimeout(self, timeout: float | None) -> None:
        pass


def theirs(data: bytes, count: int) -> list[Any]:
    parser = _RESP2Parser(socket_read_size=1 << 16)
    parser._buffer = SocketBuffer(Pieces(data, []), 1 << 16, None)  # type: ignore[arg-type]
    parser.encoder = Encoder("utf-8", "strict", False)
    return [parser.read_response(disable_decoding=True) for _ in range(count)]


def comparable(value: Any) -> Any:
    """Exceptions compare by type and text."""
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, Exception):
        return (type(value), str(value))
    return value


@settings(max_examples=300, deadline=None)
@given(replies=st.lists(values, min_size=1, max_size=5), sizes=st.lists(st.integers(1, 64), max_size=200))
def test_read_gives_what_redis_py_gives(replies, sizes) -> None:
    data = b"".join(encode(r) for r in replies)
    ours = resp.read(Pieces(data, sizes), len(replies))  # type: ignore[arg-type]
    assert comparable(ours) == comparable(theirs(data, len(replies)))


@settings(max_examples=100, deadline=None)
@given(replies=st.lists(values, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_the_parser_resumes_wherever_the_bytes_are_cut(replies, cuts) -> None:
    data = b"".join(encode(r) for r in replies)
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    parser, got = resp.Parser(), []
    for start, stop in itertools.pairwise(edges):
        parser.feed(data[start:stop])
        while (reply := parser.reply()) is not resp.INCOMPLETE:
            got.append(reply)
    assert comparable(got) == comparable(theirs(data, len(replies)))
    assert not parser.unread()


def test_a_long_bulk_string_comes_whole_once_all_of_it_is_in() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    parser = resp.Parser()
    parser.feed(b"*2\r\n$3\r\nabc\r\n$%d\r\n" % len(body))
    assert parser.reply() is resp.INCOMPLETE
    for at in range(0, len(body), 1000):
        parser.feed(body[at : at + 1000])
        assert parser.reply() is resp.INCOMPLETE
    parser.feed(b"\r\n")
    assert parser.reply() == [b"abc", body]
    assert not parser.unread()


def test_error_replies_are_redis_py_exceptions() -> None:
    nogroup, noperm = resp.read(Pieces(b"-NOGROUP No such key\r\n-NOPERM no\r\n", []), 2)  # type: ignore[arg-type]
    assert type(nogroup) is redis.ResponseError and str(nogroup).startswith("NOGROUP")
    assert isinstance(noperm, redis.exceptions.NoPermissionError)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"*2\r\n$3\r\nabc\r\n", redis.ConnectionError),  # the server closed mid-reply
        (b"?what\r\n", redis.InvalidResponse),
        (b"$x\r\n", redis.InvalidResponse),
        (b":1\r\n:2\r\n", redis.InvalidResponse),  # more than the one reply asked for
    ],
)
def test_broken_replies_raise_redis_py_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        resp.read(Pieces(data, []), 1)  # type: ignore[arg-type]


class Silent:
    def recv(self, most: int) -> bytes:
        raise TimeoutError("timed out")


def test_a_reply_that_does_not_come_is_a_redis_timeout() -> None:
    with pytest.raises(redis.TimeoutError):
        resp.read(Silent(), 1)  # type: ignore[arg-type]
