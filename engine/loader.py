"""TtlLoader: loads models on demand, keeps them for a time-to-live, evicts by memory budget.

TTL semantics (Ollama/LM Studio/Foundry): a positive TTL counts from the end of the last use;
a negative TTL keeps the model loaded until unloaded; 0 unloads it as soon as the requests that
are running finish. Every use renews the TTL. A running generation is never cut by expiry or by
an unload unless the unload is forced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.catalog.fit import memory_needed
from engine.catalog.variant import ModelVariant
from engine.clock import Clock
from engine.errors import IngotError, LoadFailed, ModelDoesNotFit, ModelNotLoaded
from engine.events import EventBus, ModelStateEvent
from engine.progress import ProgressCallback, no_progress
from engine.runtimes.base import HaltFlag, ModelInstance, Runtime
from engine.scheduler import ModelScheduler

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclass
class LoadedModel:
    variant: ModelVariant
    instance: ModelInstance
    scheduler: ModelScheduler
    ttl_s: float
    loaded_at: float
    last_used: float
    memory_bytes: int
    active: set[HaltFlag] = field(default_factory=set)
    unload_when_idle: bool = False

    def expires_at(self) -> float | None:
        """Monotonic time of expiry; None while in use or when kept forever."""
        if self.active or self.ttl_s < 0:
            return None
        return self.last_used + self.ttl_s


RuntimeFor = Callable[[ModelVariant], Runtime]
FolderFor = Callable[[ModelVariant], Path]


class TtlLoader:
    def __init__(
        self,
        *,
        runtime_for: RuntimeFor,
        folder_for: FolderFor,
        clock: Clock,
        events: EventBus[ModelStateEvent],
        memory_budget: int,
        default_ttl_s: float,
        threads: int | None,
        queue_limit: int = 16,
    ) -> None:
        self._runtime_for = runtime_for
        self._folder_for = folder_for
        self.clock = clock
        self.events = events
        self.memory_budget = memory_budget
        self.default_ttl_s = default_ttl_s
        self.threads = threads
        self.queue_limit = queue_limit
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._expiry_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._closing_tasks: set[asyncio.Task[None]] = set()

    # -- queries -------------------------------------------------------------------------------
    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def get_loaded(self, variant_id: str) -> LoadedModel | None:
        return self._loaded.get(variant_id)

    def is_loading(self, variant_id: str) -> bool:
        return variant_id in self._loading

    def _emit(self, variant_id: str, state: str, reason: str | None = None) -> None:
        entry = self._loaded.get(variant_id)
        exp = entry.expires_at() if entry else None
        wall_exp = None if exp is None else self.clock.wall() + (exp - self.clock.monotonic())
        self.events.publish(
            ModelStateEvent(variant_id, state, reason, at=self.clock.wall(), expires_at=wall_exp)
        )

    # -- loading -------------------------------------------------------------------------------
    async def load(
        self,
        variant: ModelVariant,
        *,
        ttl_s: float | None = None,
        progress: ProgressCallback = no_progress,
    ) -> LoadedModel:
        """Load (once, however many callers ask at the same time) and set/renew the TTL."""
        entry = self._loaded.get(variant.id)
        if entry is None:
            task = self._loading.get(variant.id)
            if task is None:
                task = asyncio.create_task(self._do_load(variant, ttl_s, progress))
                self._loading[variant.id] = task
                task.add_done_callback(lambda _: self._loading.pop(variant.id, None))
            # shield: one impatient caller must not abort a load others are waiting for.
            entry = await asyncio.shield(task)
        if ttl_s is not None:
            entry.ttl_s = ttl_s
            entry.unload_when_idle = ttl_s == 0
        entry.last_used = self.clock.monotonic()
        self._wakeup.set()
        return entry

    async def _do_load(
        self, variant: ModelVariant, ttl_s: float | None, progress: ProgressCallback
    ) -> LoadedModel:
        await self._make_room(variant)
        self._emit(variant.id, "loading")
        try:
            runtime = self._runtime_for(variant)
            folder = self._folder_for(variant)
            instance = await runtime.load(variant, folder, threads=self.threads, progress=progress)
        except IngotError as e:
            self._emit(variant.id, "failed", e.message)
            raise
        except Exception as e:
            self._emit(variant.id, "failed", str(e))
            raise LoadFailed(f"Loading {variant.id} failed: {e}") from e
        now = self.clock.monotonic()
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        entry = LoadedModel(
            variant=variant,
            instance=instance,
            scheduler=ModelScheduler(max(1, instance.concurrency), self.queue_limit),
            ttl_s=ttl,
            loaded_at=now,
            last_used=now,
            memory_bytes=max(instance.memory_bytes, memory_needed(variant)),
            unload_when_idle=ttl == 0,
        )
        self._loaded[variant.id] = entry
        instance.on_exit(lambda reason: self._died(entry, reason))
        self._emit(variant.id, "loaded")
        return entry

    def _died(self, entry: LoadedModel, reason: str) -> None:
        """The model's process ended on its own: forget it (the next request loads it again)."""
        vid = entry.variant.id
        if self._loaded.get(vid) is not entry:
            return
        # Running generations see the exit on their own streams and fail with this reason.
        del self._loaded[vid]
        self._emit(vid, "failed", reason)
        # What is left of it (pipes, an HTTP pool, reader tasks) is released in the background.
        task = asyncio.get_running_loop().create_task(entry.instance.close())
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)
        self._wakeup.set()

    async def _make_room(self, variant: ModelVariant) -> None:
        need = memory_needed(variant)
        used = sum(e.memory_bytes for e in self._loaded.values())
        while used + need > self.memory_budget:
            idle = [e for e in self._loaded.values() if not e.active]
            if not idle:
                if not self._loaded:
                    return  # nothing to evict: let the runtime try; the budget is advisory
                raise ModelDoesNotFit(
                    f"Loading {variant.id} needs {need / GIB:.1f} GiB; the memory budget is "
                    f"{self.memory_budget / GIB:.1f} GiB and the loaded models are busy.",
                    hint="Wait for running requests, unload a model, or raise the memory budget.",
                )
            lru = min(idle, key=lambda e: e.last_used)
            await self._unload(lru, "evicted to make room for " + variant.id)
            used -= lru.memory_bytes

    # -- using ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(
        self,
        variant: ModelVariant,
        *,
        ttl_s: float | None = None,
        progress: ProgressCallback = no_progress,
    ) -> AsyncIterator[tuple[LoadedModel, HaltFlag, float]]:
        """Load if needed and hold the model for one request: yields (entry, halt flag, seconds
        spent loading). The TTL restarts when the request ends."""
        t0 = self.clock.monotonic()
        entry = await self.load(variant, ttl_s=ttl_s, progress=progress)
        load_wait = self.clock.monotonic() - t0
        halt = HaltFlag()
        entry.active.add(halt)
        try:
            yield entry, halt, load_wait
        finally:
            entry.active.discard(halt)
            entry.last_used = self.clock.monotonic()
            if entry.unload_when_idle and not entry.active and variant.id in self._loaded:
                await self._unload(entry, "ttl 0: unloaded after the request")
            self._wakeup.set()

    # -- unloading -----------------------------------------------------------------------------
    async def unload(self, variant_id: str, *, force: bool = False) -> bool:
        """Unload now if idle or forced (halting running generations); otherwise unload as soon
        as the running requests finish. Returns True when the model is gone on return."""
        entry = self._loaded.get(variant_id)
        if entry is None:
            task = self._loading.get(variant_id)
            if task is None:
                raise ModelNotLoaded(
                    f"{variant_id} is not loaded.", hint="`ingot model list` shows what is loaded."
                )
            entry = await asyncio.shield(task)
        if entry.active and not force:
            entry.unload_when_idle = True
            self._emit(variant_id, "unloading", "after the running requests finish")
            return False
        for halt in list(entry.active):
            halt.halt("unloaded")
        await self._unload(entry, "forced" if entry.active else "requested")
        return True

    async def _unload(self, entry: LoadedModel, reason: str) -> None:
        vid = entry.variant.id
        if self._loaded.get(vid) is not entry:
            return
        self._emit(vid, "unloading", reason)
        del self._loaded[vid]
        try:
            await entry.instance.close()
        except Exception:
            log.exception("closing %s failed", vid)
        self._emit(vid, "unloaded", reason)

    async def expire_due(self) -> list[str]:
        now = self.clock.monotonic()
        expired = [
            e for e in self._loaded.values() if (t := e.expires_at()) is not None and t <= now
        ]
        for e in expired:
            await self._unload(e, "ttl expired")
        return [e.variant.id for e in expired]

    def next_expiry(self) -> float | None:
        times = [t for e in self._loaded.values() if (t := e.expires_at()) is not None]
        return min(times) if times else None

    async def _expiry_loop(self) -> None:
        while not self._closing:
            await self.expire_due()
            nxt = self.next_expiry()
            timeout = 60.0 if nxt is None else max(0.05, nxt - self.clock.monotonic())
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives as the event is set, and the loop would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout, 60.0)):
                    await self._wakeup.wait()

    def start(self) -> None:
        if self._expiry_task is None:
            self._expiry_task = asyncio.create_task(self._expiry_loop(), name="ingot-ttl-expiry")

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._expiry_task:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        for e in list(self._loaded.values()):
            for halt in list(e.active):
                halt.halt("engine shutting down")
            await self._unload(e, "engine shutting down")
