"""What a backend promises. The conformance suite, ``bridgeq check`` and the docs read it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _promise(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Capabilities:
    """The guarantees of one backend, each field documented; only promises, no harness settings."""

    consumer_groups: bool = _promise(True, "consumers in one group compete: each message goes to one of them")
    persistent: bool = _promise(False, "messages survive the client's process ending (kept by a server)")
    replay: bool = _promise(False, "a group declared late still reads messages published before it existed")
    ordered_per_key: bool = _promise(False, "messages with the same key are first delivered in publish order")
    crash_redelivery: bool = _promise(
        False, "a consumer process that dies (SIGKILL) has its unacked messages delivered to another"
    )
    crash_redelivery_seconds: float = _promise(
        0.0, "how long after a crash its messages become deliverable again, at most"
    )
    exact_delivery_count: bool = _promise(
        False, "attempt counts deliveries exactly, across consumers and client restarts"
    )
    depth: bool = _promise(True, "depth() tells how many messages wait for a group (L)")
    max_message_size: int = _promise(1 << 20, "the largest message accepted: body + id + key + headers, bytes")
    stable_foreign_ids: bool = _promise(
        True, "messages published by other clients get an id that stays the same across redeliveries"
    )

    def describe(self) -> list[tuple[str, Any, str]]:
        """(name, value, doc) for each promise, in declaration order."""
        return [(f.name, getattr(self, f.name), f.metadata["doc"]) for f in dataclasses.fields(self)]

    def as_dict(self) -> dict[str, Any]:
        """The promises as a plain dict (for JSON output)."""
        return dataclasses.asdict(self)
