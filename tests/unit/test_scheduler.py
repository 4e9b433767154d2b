"""ModelScheduler: one at a time, priority classes with aging, bounded queue."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import EngineBusy
from engine.scheduler import PRIORITY_BATCH, PRIORITY_CHAT, PRIORITY_INTERACTIVE, ModelScheduler


async def test_interactive_goes_before_waiting_chat() -> None:
    s = ModelScheduler(concurrency=1, queue_limit=8)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, prio: int) -> None:
        async with s.slot(prio):
            order.append(name)
            if name == "first":
                await gate.wait()

    first = asyncio.create_task(job("first", PRIORITY_CHAT))
    await asyncio.sleep(0)
    chat = asyncio.create_task(job("chat", PRIORITY_CHAT))
    batch = asyncio.create_task(job("batch", PRIORITY_BATCH))
    await asyncio.sleep(0)
    inline = asyncio.create_task(job("inline", PRIORITY_INTERACTIVE))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, chat, batch, inline)
    assert order == ["first", "inline", "chat", "batch"]


async def test_queue_limit_raises_engine_busy_and_cancelled_waiter_frees_its_place() -> None:
    s = ModelScheduler(concurrency=1, queue_limit=1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with s.slot():
            await gate.wait()

    async def wait_turn() -> None:
        async with s.slot():
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(wait_turn())
    await asyncio.sleep(0)
    with pytest.raises(EngineBusy):
        async with s.slot():
            pass
    waiter.cancel()
    await asyncio.sleep(0)
    assert s.queued == 0
    gate.set()
    await holder
    async with s.slot() as waited:
        assert waited >= 0
    assert s.running == 0
