"""TTL loader semantics with a fake clock and a fake runtime (no sleeping, no model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.catalog.fit import RUNTIME_OVERHEAD_BYTES
from engine.errors import ModelNotLoaded
from engine.events import EventBus, ModelStateEvent
from engine.loader import TtlLoader
from tests.unit.fakes import FakeClock, FakeRuntime, variant


def make(
    budget: int = 10**12, ttl: float = 600.0
) -> tuple[TtlLoader, FakeRuntime, FakeClock, list[ModelStateEvent]]:
    rt = FakeRuntime()
    clock = FakeClock()
    bus: EventBus[ModelStateEvent] = EventBus()
    seen: list[ModelStateEvent] = []
    bus.add_listener(seen.append)
    loader = TtlLoader(
        runtime_for=lambda v: rt,
        folder_for=lambda v: Path("/nowhere"),
        clock=clock,
        events=bus,
        memory_budget=budget,
        default_ttl_s=ttl,
        threads=None,
    )
    return loader, rt, clock, seen


async def test_concurrent_loads_happen_once() -> None:
    loader, rt, _, seen = make()
    rt.load_delay = 0.05
    v = variant()
    a, b, c = await asyncio.gather(loader.load(v), loader.load(v), loader.load(v))
    assert a is b is c
    assert rt.loads == 1
    assert [e.state for e in seen] == ["loading", "loaded"]


async def test_ttl_expires_after_last_use_and_use_renews() -> None:
    loader, _, clock, seen = make(ttl=10)
    v = variant()
    await loader.load(v)
    clock.advance(8)
    async with loader.use(v):
        clock.advance(100)  # in use: never expires
        assert await loader.expire_due() == []
    clock.advance(9)
    assert await loader.expire_due() == []
    clock.advance(2)
    assert await loader.expire_due() == [v.id]
    assert seen[-1].state == "unloaded" and seen[-1].reason == "ttl expired"


async def test_negative_ttl_keeps_forever_and_zero_unloads_after_request() -> None:
    loader, rt, clock, _ = make()
    forever, once = variant("a", "a"), variant("b", "b")
    await loader.load(forever, ttl_s=-1)
    clock.advance(10**9)
    assert await loader.expire_due() == []
    async with loader.use(once, ttl_s=0) as (entry, _, _):
        assert loader.get_loaded(once.id) is entry
    assert loader.get_loaded(once.id) is None
    assert rt.instances[1].closed


async def test_unload_waits_for_running_request_unless_forced() -> None:
    loader, _, _, _seen = make()
    v = variant()
    async with loader.use(v) as (_, halt, _):
        assert await loader.unload(v.id) is False  # deferred
        assert not halt.halted
        assert loader.get_loaded(v.id) is not None
    assert loader.get_loaded(v.id) is None
    async with loader.use(v) as (_, halt, _):
        assert await loader.unload(v.id, force=True) is True
        assert halt.halted and halt.reason == "unloaded"
    with pytest.raises(ModelNotLoaded):
        await loader.unload(v.id)


async def test_memory_budget_evicts_least_recently_used_idle_model() -> None:
    need = int(1000 * 1.05) + RUNTIME_OVERHEAD_BYTES
    loader, _, clock, seen = make(budget=2 * need + 10)
    a, b, c = variant("a", "a"), variant("b", "b"), variant("c", "c")
    await loader.load(a)
    clock.advance(1)
    await loader.load(b)
    clock.advance(1)
    await loader.load(a)  # a is now the most recently used
    await loader.load(c)
    assert {e.variant.id for e in loader.loaded()} == {a.id, c.id}
    assert any(e.state == "unloaded" and "evicted" in (e.reason or "") for e in seen)


async def test_a_model_that_dies_is_forgotten_reported_and_loaded_again() -> None:
    loader, rt, _, seen = make()
    v = variant()
    await loader.load(v)
    rt.instances[0].crash("killed by signal 9")
    assert loader.get_loaded(v.id) is None
    assert (seen[-1].state, seen[-1].reason) == ("failed", "killed by signal 9")
    await loader.load(v)
    assert rt.loads == 2 and loader.get_loaded(v.id) is not None
    # A late report from the old instance changes nothing about the new one.
    rt.instances[0].crash("late")
    assert loader.get_loaded(v.id) is not None


def test_halt_flag_callbacks_fire_once_and_unsubscribe() -> None:
    from engine.runtimes.base import HaltFlag

    flag = HaltFlag()
    got: list[str] = []
    remove = flag.on_halt(got.append)
    other = flag.on_halt(lambda r: got.append("other:" + r))
    other()
    flag.halt("stop")
    flag.halt("again")
    assert got == ["stop"] and flag.reason == "stop"
    remove()
    flag.on_halt(got.append)  # already halted: called at once
    assert got == ["stop", "stop"]
