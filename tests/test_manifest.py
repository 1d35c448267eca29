"""The manifest's in-memory index: filed when read, counted meanwhile."""

from __future__ import annotations

from bridgeq.manifest import Manifest, fingerprint_lines
from bridgeq.message import Message


def test_added_ids_are_found_and_counted_once_the_index_is_read(tmp_path):
    manifest = Manifest(tmp_path / "ck.json", {"source": "a", "destination": "b"})
    first = [Message(b"one", id="a"), Message(b"two", id="b")]
    again = [Message(b"two", id="b")]  # recorded twice: published again while in flight
    for batch in (first, again):
        manifest.add(fingerprint_lines(batch), len(batch))
    assert manifest.moved == 3  # not yet filed: each record counts
    assert manifest.seen(Message(b"two", id="b")) and not manifest.seen(Message(b"two", id="x"))
    assert manifest.moved == 2  # filed by the lookup
    assert set(manifest.entries) == {"a", "b"}
    assert manifest.seen(Message(b"one", id="a")) and not manifest.seen(Message(b"changed", id="a"))
    manifest.close()
    resumed = Manifest(tmp_path / "ck.json", {"source": "a", "destination": "b"})
    assert resumed.moved == 2 and resumed.entries == manifest.entries
    resumed.close()
