"""One thread that runs blocking calls for an event loop, one at a time, in order.

A subscription's fetches must not run on the loop, and must not run two at a
time. An executor would do, but each result would cross back through two
futures and two loop iterations; here it comes back with one wake-up of the
loop, which is most of what a fetch through asyncio costs beyond the fetch.
"""

from __future__ import annotations

import _thread
import asyncio
import queue
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Orphan = Callable[[Any], None]

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], "Orphan | None"]


class CallThread:
    """Runs ``call(function, *args)`` on its own thread; the loop awaits the result."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        _thread.start_new_thread(self._serve, ())  # returns at once: safe to start on the loop

    def call(self, function: Callable[..., T], *args: Any, orphan: Orphan | None = None) -> asyncio.Future[T]:
        """A future of ``function(*args)``. If the future is cancelled before the result
        arrives, ``orphan(result)`` is called with it instead (on the loop)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, function, args, orphan))
        return future

    def stop(self) -> None:
        """End the thread once the calls already queued have run."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, function, args, orphan = job
            try:
                result, error = function(*args), None
            except BaseException as exc:  # handed to the awaiting task, whatever it is
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_resolve, future, result, error, orphan)
            except RuntimeError:  # the loop is closed: nobody awaits this any more
                if orphan is not None and error is None:
                    orphan(result)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None, orphan: Orphan | None) -> None:
    if future.cancelled():
        if orphan is not None and error is None:
            orphan(result)
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
