"""Sends settlements that waited too long: one shared daemon thread for the whole process.

Acks are batched: a subscription sends them before its next fetch, when
``ack_batch`` are waiting, on close, or, through this thread, once the oldest
has waited ``linger`` seconds, so an application that acks and then goes quiet
still has its acks reach the broker promptly.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Lingering(Protocol):
    def flush_if_idle(self) -> bool:
        """Send what waits unless busy; True when nothing waits any more."""


class LingerFlusher:
    """Wakes every ``linger`` seconds while anything is registered; sleeps otherwise."""

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self._waiting: dict[Lingering, float] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread if it is not running (called when a subscription opens, not when acking:
        starting a thread waits for it to run, which an asyncio loop must not)."""
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="bridgeq-ack-linger", daemon=True)
                self._thread.start()

    def register(self, owner: Lingering) -> None:
        with self._wake:
            if owner not in self._waiting:
                self._waiting[owner] = time.monotonic()
            self._wake.notify()
        if self._thread is None or not self._thread.is_alive():
            self.start()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._waiting:
                    self._wake.wait()
                self._wake.wait(self.linger)
                due = [o for o, since in self._waiting.items() if time.monotonic() - since >= self.linger]
            done = [owner for owner in due if owner.flush_if_idle()]
            with self._wake:
                for owner in done:
                    self._waiting.pop(owner, None)
                for owner in due:
                    if owner in self._waiting:
                        self._waiting[owner] = time.monotonic()


flusher = LingerFlusher(linger=0.05)
