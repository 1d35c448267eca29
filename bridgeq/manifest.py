"""What a migration moved: one fingerprint per message id, kept durably for resume and verify.

A fingerprint is a SHA-256 over body, key and headers, so an altered message is
told apart from a duplicate. With a checkpoint file the manifest is an
append-only TSV beside it (``<checkpoint>.manifest``: id, fingerprint), fsynced
before the source is acked, and the checkpoint (JSON) holds the totals.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bridgeq.errors import ConfigError
from bridgeq.message import Delivery


def fingerprint(body: bytes, key: str | None, headers: Mapping[str, str]) -> str:
    """SHA-256 of what must arrive unchanged: body, key and headers."""
    digest = hashlib.sha256(body)
    digest.update(b"\0key\0" + (key.encode("utf-8") if key is not None else b"\xff"))
    for name in sorted(headers):
        digest.update(b"\0h\0" + name.encode("utf-8") + b"\0" + headers[name].encode("utf-8"))
    return digest.hexdigest()


def fingerprint_of(delivery: Delivery) -> str:
    return fingerprint(delivery.body, delivery.key, delivery.headers)


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
        self.entries: dict[str, str] = {}
        self.path = Path(checkpoint) if checkpoint else None
        self.progress = Progress(identity)
        self._log = None
        if self.path is not None:
            self._load(identity)
            self._log = open(self._manifest_path(), "a", encoding="utf-8")  # noqa: SIM115 - kept open

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
                for line in lines:
                    message_id, tab, digest = line.rstrip("\n").partition("\t")
                    if tab and len(digest) == 64:  # a torn last line from a crash is ignored
                        self.entries[message_id] = digest
        self.progress.moved = len(self.entries)
        self.progress.runs += 1
        self.save()

    def seen(self, delivery: Delivery) -> bool:
        """True when this id was already moved unchanged (a redelivery after a crash)."""
        known = self.entries.get(delivery.id)
        return known is not None and known == fingerprint_of(delivery)

    def record(self, deliveries: Iterable[Delivery]) -> None:
        """Add moved messages; durable (fsynced) before this returns when there is a file."""
        lines = []
        for delivery in deliveries:
            digest = fingerprint_of(delivery)
            if self.entries.get(delivery.id) != digest:
                self.entries[delivery.id] = digest
                lines.append(f"{delivery.id}\t{digest}\n")
        self.progress.moved = len(self.entries)
        self.progress.batches += 1
        if self._log is not None and lines:
            self._log.write("".join(lines))
            self._log.flush()
            os.fsync(self._log.fileno())
            self.save()

    def save(self) -> None:
        """Write the totals atomically (temp file, fsync, rename)."""
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
            self._log.close()
            self._log = None
