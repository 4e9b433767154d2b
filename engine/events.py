"""An in-process event bus: model state changes and telemetry, fanned out to subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ModelStateEvent:
    """A model variant changed state: downloading, compiling, loading, loaded, unloading, unloaded,
    failed, deleted. `reason` says why (e.g. "ttl expired", "evicted for memory", "requested")."""

    model_id: str
    state: str
    reason: str | None = None
    at: float = 0.0
    expires_at: float | None = None


@dataclass
class EventBus(Generic[T]):
    """Fan-out to callbacks and async subscribers. Subscribers get a bounded queue; a slow one loses
    its oldest events rather than slowing the engine down."""

    maxsize: int = 1000
    _callbacks: list[Callable[[T], None]] = field(default_factory=list)
    _queues: set[asyncio.Queue[T]] = field(default_factory=set)

    def publish(self, event: T) -> None:
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:  # a broken subscriber must not break the engine
                log.exception("event subscriber failed")
        for q in list(self._queues):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    def add_listener(self, cb: Callable[[T], None]) -> Callable[[], None]:
        self._callbacks.append(cb)
        return lambda: self._callbacks.remove(cb) if cb in self._callbacks else None

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[T]]:
        q: asyncio.Queue[T] = asyncio.Queue(self.maxsize)
        self._queues.add(q)
        try:
            yield q
        finally:
            self._queues.discard(q)
