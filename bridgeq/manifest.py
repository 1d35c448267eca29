"""What a migration moved: one fingerprint per message id, kept durably for resume and verify.

A fingerprint is a SHA-256 over body, key and headers, so an altered message is
told apart from a duplicate. With a checkpoint file the manifest is an
append-only TSV beside it (``<checkpoint>.manifest``: id, fingerprint), made
durable (``O_DSYNC``, or fsync) before the source is acked; the checkpoint
(JSON) holds the totals, rewritten every SAVE_EVERY seconds and at the end.
A migration computes a batch's manifest lines (:func:`fingerprint_lines`) on
whichever side has time, and files them with :meth:`Manifest.add`: the lines are
all that crosses between processes, and the in-memory index is built from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridgeq.errors import ConfigError

SAVE_EVERY = 0.25
"""Seconds between writes of the checkpoint's totals while moving (a resume recounts from the manifest)."""

_NO_KEY = b"\0key\0\xff"
_sha256 = hashlib.sha256


class Fingerprinted(Protocol):
    """A message or a delivery: what a fingerprint covers, and its id."""

    id: str
    body: bytes
    key: str | None
    headers: Mapping[str, str]


def fingerprint(body: bytes, key: str | None, headers: Mapping[str, str]) -> str:
    """SHA-256 of what must arrive unchanged: body, key and headers."""
    digest = _sha256(body)
    digest.update(_NO_KEY if key is None else b"\0key\0" + key.encode("utf-8"))
    if headers:
        for name in sorted(headers):
            digest.update(b"\0h\0" + name.encode("utf-8") + b"\0" + headers[name].encode("utf-8"))
    return digest.hexdigest()


def fingerprint_of(delivery: Fingerprinted) -> str:
    return fingerprint(delivery.body, delivery.key, delivery.headers)


def fingerprint_lines(messages: Sequence[Fingerprinted]) -> str:
    """The manifest lines of ``messages`` (id, tab, fingerprint), ready for :meth:`Manifest.add`."""
    sha256 = _sha256
    return "".join(
        [
            f"{m.id}\t{sha256(m.body + _NO_KEY).hexdigest()}\n"  # the same digest as fingerprint(), in one call
            if m.key is None and not m.headers
            else f"{m.id}\t{fingerprint(m.body, m.key, m.headers)}\n"
            for m in messages
        ]
    )


def _file(lines: Iterable[str], entries: dict[str, str]) -> None:
    """Put manifest lines into ``entries``; a torn line (a crash mid-write) is left out."""
    for line in lines:
        message_id, tab, digest = line.partition("\t")
        if tab and len(digest) == 64:
            entries[message_id] = digest


@dataclass
class Progress:
    """The checkpoint's totals; ``identity`` ties it to one source, destination and topic."""

    identity: dict[str, str]
    moved: int = 0
    skipped_duplicates: int = 0
    batches: int = 0
    runs: int = 0
    in_flight_window: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Manifest:
    """Fingerprints by id, in memory, and in a durable file when a checkpoint is given."""

    def __init__(self, checkpoint: str | os.PathLike[str] | None, identity: dict[str, str]) -> None:
        self._entries: dict[str, str] = {}
        self._unfiled: list[str] = []  # manifest lines added, not yet in _entries
        self._unfiled_count = 0
        self.path = Path(checkpoint) if checkpoint else None
        self.progress = Progress(identity)
        self._log: int | None = None  # the manifest file's descriptor, opened for durable appends
        self._saved = 0.0  # when the totals were last written
        if self.path is not None:
            self._load(identity)
            torn = _torn(self._manifest_path())
            self._log = os.open(self._manifest_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | _DSYNC, 0o644)
            if torn:
                self._append("\n")  # end a torn last line, or the next entry would join it

    def _manifest_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".manifest")

    @property
    def resumed(self) -> bool:
        return self.progress.runs > 1

    def _load(self, identity: dict[str, str]) -> None:
        assert self.path is not None
        if self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("identity") != identity:
                raise ConfigError(
                    f"checkpoint {self.path} belongs to another migration ({saved.get('identity')}); "
                    "use another --checkpoint file"
                )
            self.progress = Progress(**saved)
        manifest = self._manifest_path()
        if manifest.exists():
            with open(manifest, encoding="utf-8") as lines:
                _file((line.rstrip("\n") for line in lines), self._entries)
        self.progress.moved = len(self._entries)
        self.progress.runs += 1
        self.save()

    @property
    def entries(self) -> dict[str, str]:
        """Fingerprint by message id, for all moved messages (the index is brought up to date here)."""
        if self._unfiled:
            for lines in self._unfiled:
                _file(lines.split("\n"), self._entries)
            self._unfiled.clear()
            self._unfiled_count = 0
        return self._entries

    @property
    def moved(self) -> int:
        """How many messages were moved: exact once :attr:`entries` was read, else it may count an id
        recorded twice since then (a redelivery published again while in flight) twice."""
        return len(self._entries) + self._unfiled_count

    def seen(self, delivery: Fingerprinted) -> bool:
        """True when this id was already moved unchanged (a redelivery after a crash)."""
        known = self.entries.get(delivery.id)
        return known is not None and known == fingerprint_of(delivery)

    def unseen(self, deliveries: Sequence[Any]) -> Sequence[Any]:
        """The deliveries not already moved unchanged (all of them, quickly, when nothing was moved yet)."""
        entries = self.entries
        if not entries:
            return deliveries
        return [d for d in deliveries if d.id not in entries or not self.seen(d)]

    def add(self, lines: str, count: int, batches: int = 1) -> None:
        """Add ``count`` moved messages by their manifest lines (:func:`fingerprint_lines`); durable
        before this returns when there is a file. The in-memory index takes them when it is next
        read: a migration whose source flags redeliveries reads it only for those."""
        self._unfiled.append(lines)
        self._unfiled_count += count
        self.progress.moved = self.moved
        self.progress.batches += batches
        if self._log is not None and lines:
            self._append(lines)
            if time.monotonic() - self._saved >= SAVE_EVERY:
                self.save()

    def _append(self, text: str) -> None:
        assert self._log is not None
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(self._log, data) :]
        if not _DSYNC:
            os.fsync(self._log)

    def save(self) -> None:
        """Write the totals atomically (temp file, fsync, rename)."""
        self._saved = time.monotonic()
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(asdict(self.progress), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def close(self) -> None:
        if self._log is not None:
            os.close(self._log)
            self._log = None


_DSYNC: int = getattr(os, "O_DSYNC", 0)
"""Where the platform has it, each append is durable when write() returns: one system call, not two."""


def _torn(path: Path) -> bool:
    """True when the file's last line lacks its newline (a crash mid-write)."""
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"
