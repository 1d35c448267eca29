"""bridgeq.aio: nothing lost on cancellation, bounded concurrency, and the loop-blocking watch works."""

from __future__ import annotations

import asyncio
import time

import bridgeq.aio as aio
from bridgeq.testing.through_asyncio import LoopThread


def test_a_cancelled_receive_loses_nothing():
    async def scenario():
        async with aio.connect("memory://") as broker, broker.subscribe("t", "g") as sub:
            waiting = asyncio.create_task(sub.receive(timeout=5))
            await asyncio.sleep(0.1)
            waiting.cancel()
            mid = await broker.publish("t", b"after the cancel")
            delivery = await sub.receive(timeout=5)
            assert (delivery.id, delivery.attempt) == (mid, 1)
            await delivery.ack()
            assert await sub.receive(timeout=0.3) is None

    asyncio.run(scenario())


def test_abandoned_iteration_puts_the_rest_back_in_line():
    async def scenario():
        async with aio.connect("memory://") as broker, broker.subscribe("t", "g") as sub:
            ids = await broker.publish_batch("t", [b"1", b"2", b"3"])
            async for delivery in sub:
                await delivery.ack()
                break
            rest = await sub.receive_batch(10, timeout=1)
            assert [d.id for d in rest] == ids[1:]
            assert {d.attempt for d in rest} == {1}

    asyncio.run(scenario())


def test_run_handles_up_to_concurrency_at_once_and_acks():
    async def scenario():
        async with aio.connect("memory://") as broker, broker.subscribe("t", "g") as sub:
            await broker.publish_batch("t", [b"x"] * 20)
            active = peak = 0

            async def handler(delivery):
                nonlocal active, peak
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.02)
                active -= 1

            assert await sub.run(handler, concurrency=4, stop_after=20) == 20
            assert peak == 4
            await sub.flush()
            assert await broker.depth("t", "g") == 0

    asyncio.run(scenario())


def test_cancelling_run_returns_unhandled_messages():
    async def scenario():
        async with aio.connect("memory://") as broker, broker.subscribe("t", "g") as sub:
            ids = await broker.publish_batch("t", [f"m{i}" for i in range(10)])
            done: list[str] = []

            async def slow(delivery):
                await asyncio.sleep(0.05)
                done.append(delivery.id)

            task = asyncio.create_task(sub.run(slow, concurrency=2))
            await asyncio.sleep(0.12)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            rest = []
            while batch := await sub.receive_batch(20, timeout=0.5):
                rest += batch
            assert sorted(done + [d.id for d in rest]) == sorted(ids), "handled + returned = everything, once"

    asyncio.run(scenario())


def test_the_loop_watch_sees_a_blocking_call():
    loop = LoopThread()

    async def blocks():
        time.sleep(0.1)

    loop.run(blocks())
    loop.stop()
    assert loop.slow.seen and loop.slow.seen[0][0] >= 0.1 and "took" in loop.slow.seen[0][1]
    assert not loop.slow.hangs(), "a tenth of a second is a slow callback, not a hang"


class _FakeBackend:
    def consumer(self, topic: str) -> _FakeBackend:
        return self

    def fetch(self) -> str:
        return "fetched"


def test_the_loop_guard_names_backend_calls_made_on_the_loop():
    loop = LoopThread()
    backend = loop.guard.wrap(_FakeBackend(), "FakeBackend")

    async def on_the_loop() -> str:
        return backend.consumer("t").fetch()

    assert backend.consumer("t").fetch() == "fetched"  # from this thread: allowed
    assert loop.guard.violations == []
    assert loop.run(on_the_loop()) == "fetched"
    loop.stop()
    assert loop.guard.violations == ["FakeBackend.consumer()", "consumer.fetch()"]
