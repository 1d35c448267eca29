"""entries.shortcut: XREADGROUP replies read with it equal those read without it, however cut."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridgeq_redis import entries, resp

TRICKY = st.sampled_from([b"", b"\r\n", b"$4\r\nbody\r\n$3\r\n", b"*2\r\n$5\r\nce_id", b"x" * 70_000])
bodies = st.binary(max_size=200) | TRICKY
ids = st.text(max_size=40).map(str.encode) | TRICKY
ours = st.tuples(ids, bodies).map(lambda t: [b"ce_id", t[0], b"body", t[1]])
others = st.lists(st.binary(max_size=30), max_size=3).map(lambda xs: xs + xs[:1] if len(xs) % 2 else xs)
foreign = st.sampled_from([[b"body", b"x", b"ce_id", b"y"], [b"ce_id", b"y", b"data", b"x"], [b"ce_id", b"y"]])
fields = ours | ours.map(lambda f: [*f[:2], b"bodyx", f[3]]) | others | foreign


def encode(value: Any) -> bytes:
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)
    return b"$%d\r\n%s\r\n" % (len(value), value)


def generic(value: Any) -> Any:
    """The shortcut's (entry id, id, body) as the generic parser reads the same entry."""
    if isinstance(value, tuple):
        entry_id, mid, body = value
        return [entry_id, [b"ce_id", mid, b"body", body]]
    if isinstance(value, list):
        return [generic(v) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(fields, max_size=12),
    cuts=st.lists(st.integers(0, 200_000), max_size=20),
    first=st.integers(0, 2**40),
)
def test_the_shortcut_reads_what_the_parser_reads(rows, cuts, first) -> None:
    reply = [[b"bridgeq:orders", [[b"%d-%d" % (first, n), f] for n, f in enumerate(rows)]]]
    data = encode(reply)
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    parser, got = resp.Parser(entries.shortcut(b"body")), []
    for start, stop in itertools.pairwise(edges):
        parser.feed(data[start:stop])
        while (value := parser.reply()) is not resp.INCOMPLETE:
            got.append(value)
    assert [generic(v) for v in got] == [reply]
    if len(edges) == 2:  # received at once: every entry in bridgeq's layout took the shortcut
        taken = [type(e) is tuple for e in got[0][0][1]]
        assert taken == [len(f) == 4 and f[0] == b"ce_id" and f[2] == b"body" for f in rows]


def test_a_custom_body_field() -> None:
    data = encode([[b"s", [[b"1-0", [b"ce_id", b"m", b"payload", b"hi"]], [b"1-1", [b"ce_id", b"m", b"body", b"x"]]]]])
    parser = resp.Parser(entries.shortcut(b"payload"))
    parser.feed(data)
    assert parser.reply() == [[b"s", [(b"1-0", b"m", b"hi"), [b"1-1", [b"ce_id", b"m", b"body", b"x"]]]]]
