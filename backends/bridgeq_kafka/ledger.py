"""What one member may commit for one partition: the contiguous-ack watermark. Pure logic, no client.

Kafka keeps one committed offset per partition and group: every record below it
counts as done. A member acks out of order, so it commits the *watermark*: the
lowest offset it delivered and has not acked yet (or one past the last record it
saw when everything is acked). An ack never moves the commit past an unacked
message.

What lies above the watermark travels in the commit's metadata string, so the
next owner of the partition (after a rebalance, close or crash) neither delivers
acked messages again nor restarts the attempt count of unacked ones, and
``depth`` stays exact::

    bridgeq:1;acked=2-4,7;delivered=0*1,1*3,5*2

Offsets are relative to the committed offset: here 2, 3, 4 and 7 above it were
acked; the one at the committed offset was delivered once, the next one three
times. Other clients ignore the metadata (they only redeliver more). It stays
under the broker's ``offset.metadata.max.bytes`` (4096 by default): what does not
fit is left out, which only costs duplicates or an undercounted attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MAGIC = "bridgeq:1"
METADATA_LIMIT = 3500
MAX_SPAN = 1 << 20


class Ledger:
    """One partition as one member holds it during one assignment. Not thread-safe."""

    __slots__ = ("acked", "fetched", "horizon", "inherited", "pending", "sent", "slot")

    def __init__(self, committed: int | None, metadata: str = "") -> None:
        self.fetched = committed
        """One past the highest offset seen; None until the first record when the group had no commit."""
        self.pending: dict[int, int] = {}
        """Delivered and not acked, ascending: offset -> deliveries so far."""
        self.acked, self.inherited = decode(committed, metadata)
        """Acked above the watermark (never delivered again); deliveries by earlier owners of unseen offsets."""
        self.horizon = max((*self.acked, *self.inherited), default=-1) + 1
        """From this offset on the metadata says nothing: records there are plain first deliveries."""
        self.sent = (committed, metadata) if committed is not None else None
        """The (offset, metadata) last committed."""
        self.slot = 0
        """The member's number for this ledger: it goes into the tokens of its deliveries."""

    def deliver(self, offset: int) -> int:
        """The attempt number for the record at ``offset``, or 0 when it must not be delivered."""
        if self.fetched is not None and offset < self.fetched:
            return 0  # already seen in this assignment
        self.fetched = offset + 1
        if offset in self.acked:
            return 0
        attempt = self.pending[offset] = self.inherited.pop(offset, 0) + 1
        return attempt

    def deliver_all(self, offsets: list[int]) -> list[int] | None:
        """:meth:`deliver` for the ascending offsets one poll returned for the partition.

        None when every one is a first delivery, the usual case, booked in bulk:
        nothing at or above the first was seen in this assignment or is in the metadata.
        """
        first = offsets[0]
        if first >= self.horizon and (self.fetched is None or first >= self.fetched):
            self.pending.update(dict.fromkeys(offsets, 1))
            self.fetched = offsets[-1] + 1
            return None
        return [self.deliver(offset) for offset in offsets]

    def redeliver(self, offset: int) -> int:
        """Count another delivery of an unacked offset; its attempt number, or 0 if it is not pending."""
        attempts = self.pending.get(offset)
        if attempts is None:
            return 0
        self.pending[offset] = attempts + 1
        return attempts + 1

    def ack(self, offset: int) -> None:
        if self.pending.pop(offset, None) is not None:
            self.acked.add(offset)

    def ack_all(self, offsets: list[int]) -> None:
        """:meth:`ack` for many offsets. Only those above the new watermark are kept in ``acked``:
        the ones below are what the next commit covers anyway."""
        pending = self.pending
        pop = pending.pop
        for offset in offsets:
            pop(offset, None)
        if pending and offsets:
            mark = next(iter(pending))
            if max(offsets) > mark:  # acked out of order: remembered until the watermark passes them
                self.acked.update(offset for offset in offsets if offset > mark)

    def watermark(self) -> int | None:
        """The offset to commit: everything below it is acked."""
        return next(iter(self.pending)) if self.pending else self.fetched

    def commit(self) -> tuple[int, str] | None:
        """The (offset, metadata) to commit now; None when the last commit already says it."""
        mark = self.watermark()
        if mark is None:
            return None
        if self.acked:
            self.acked = {offset for offset in self.acked if offset >= mark}
        point = (mark, encode(mark, self.acked, {**self.inherited, **self.pending}))
        return None if point == self.sent else point


def encode(base: int, acked: Iterable[int], delivered: Mapping[int, int]) -> str:
    """The metadata string for a commit at ``base`` (see the module docstring)."""
    parts = [MAGIC]
    size = len(MAGIC)
    ranges: Iterable[str] = _ranges(sorted(o - base for o in acked if o >= base))
    # Lazy: with many deliveries pending, only what fits under the limit is formatted.
    counts: Iterable[str] = (f"{o - base}*{n}" for o, n in sorted(delivered.items()) if o >= base)
    for label, items in (("acked", ranges), ("delivered", counts)):
        kept: list[str] = []
        for item in items:
            size += len(item) + 1
            if size + len(label) + 2 > METADATA_LIMIT:
                break
            kept.append(item)
        if kept:
            parts.append(f"{label}={','.join(kept)}")
            size += len(label) + 2
    return ";".join(parts) if len(parts) > 1 else ""


def decode(base: int | None, metadata: str) -> tuple[set[int], dict[int, int]]:
    """(acked offsets, offset -> deliveries) from a commit's metadata; empty for anything not ours."""
    acked: set[int] = set()
    delivered: dict[int, int] = {}
    if base is None or not metadata.startswith(MAGIC + ";"):
        return acked, delivered
    try:
        for part in metadata.split(";")[1:]:
            label, _, items = part.partition("=")
            for item in items.split(","):
                if label == "acked":
                    first, _, last = item.partition("-")
                    span = range(base + int(first), base + int(last or first) + 1)
                    if len(span) > MAX_SPAN:
                        raise ValueError("implausible range")
                    acked.update(span)
                elif label == "delivered":
                    offset, _, count = item.partition("*")
                    delivered[base + int(offset)] = int(count)
    except ValueError:
        return set(), {}
    return acked, delivered


def acked_count(metadata: str) -> int:
    """How many offsets above the committed one the metadata says are acked."""
    total = 0
    for part in metadata.split(";")[1:] if metadata.startswith(MAGIC + ";") else ():
        label, _, items = part.partition("=")
        if label == "acked":
            for item in items.split(","):
                first, _, last = item.partition("-")
                try:
                    total += int(last or first) - int(first) + 1
                except ValueError:
                    return 0
    return total


def _ranges(offsets: list[int]) -> list[str]:
    ranges: list[str] = []
    start = prev = None
    for offset in offsets:
        if prev is not None and offset == prev + 1:
            prev = offset
            continue
        if start is not None:
            ranges.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = offset
    if start is not None:
        ranges.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ranges
