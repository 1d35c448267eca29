"""Stream entries in bridgeq's own layout, read from an XREADGROUP reply in one step each.

An entry bridgeq wrote is ``[entry id, [ce_id, <id>, <body field>, <body>]]``: seven
RESP elements, which a generic parser reads one at a time. :func:`shortcut` reads
the whole entry with two regular-expression matches and three slices (about a
third of the time), as ``(entry id, message id, body)``. Any other entry (other
fields, another order, or not wholly received yet) is left to the generic parser.
"""

from __future__ import annotations

import re

from bridgeq.wire import ID_HEADER

from .resp import Shortcut

Entry = tuple[bytes, bytes, bytes]
"""(entry id, message id, body) of an entry with exactly the fields ce_id and the body field."""


def _bulk(text: bytes) -> bytes:
    """The pattern of one RESP bulk string holding exactly ``text``."""
    return re.escape(b"$%d\r\n%s\r\n" % (len(text), text))


_HEAD = re.compile(rb"\*2\r\n\$\d+\r\n(\d+-\d+)\r\n\*4\r\n" + _bulk(ID_HEADER.encode()) + rb"\$(\d+)\r\n")


def shortcut(body_field: bytes) -> Shortcut:
    """The :class:`~.resp.Parser` shortcut for entries whose body is in ``body_field``."""
    head = _HEAD.match
    tail = re.compile(_bulk(body_field) + rb"\$(\d+)\r\n").match

    def entry(data: bytes, pos: int) -> tuple[Entry, int] | None:
        if (first := head(data, pos)) is None:
            return None
        id_start = first.end()
        id_end = id_start + int(first[2])
        if data[id_end : id_end + 2] != b"\r\n" or (second := tail(data, id_end + 2)) is None:
            return None
        body_start = second.end()
        body_end = body_start + int(second[1])
        if data[body_end : body_end + 2] != b"\r\n":
            return None
        return (first[1], data[id_start:id_end], data[body_start:body_end]), body_end + 2

    return entry
