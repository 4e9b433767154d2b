"""ModelScheduler: a bounded, prioritised queue in front of one loaded model.

Requests take one of the model's slots to run (its instance says how many it runs at once).
Waiters are served by priority class, then in
arrival order, so interactive work (inline completions, edits) goes ahead of long chats without
any class starving: a waiter's effective priority improves the longer it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from engine.errors import EngineBusy

# Latency classes: lower runs first.
PRIORITY_INTERACTIVE = 0  # inline completion, edit
PRIORITY_CHAT = 1
PRIORITY_BATCH = 2  # bench, background jobs

# Seconds of waiting that are worth one priority class (anti-starvation aging).
AGING_S = 5.0


@dataclass(order=True)
class _Waiter:
    key: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class ModelScheduler:
    def __init__(self, concurrency: int = 1, queue_limit: int = 16) -> None:
        self.concurrency = concurrency
        self.queue_limit = queue_limit
        self.running = 0
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def queued(self) -> int:
        return sum(1 for w in self._heap if not w.future.done())

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = PRIORITY_CHAT) -> AsyncIterator[float]:
        """Wait for a turn; yields the seconds spent waiting. Raises EngineBusy when full."""
        t0 = time.monotonic()
        if self.running >= self.concurrency or self.queued:
            if self.queued >= self.queue_limit:
                raise EngineBusy(
                    f"{self.queued} requests are already waiting for this model.",
                    hint="Retry in a few seconds, or raise the queue limit.",
                    queued=self.queued,
                    retry_after_s=2,
                )
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # Aging: earlier arrivals get a head start worth their wait in classes.
            heapq.heappush(self._heap, _Waiter(priority * AGING_S + t0, next(self._seq), fut))
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    # We were handed the slot just as we were cancelled: pass it on.
                    self.running -= 1
                    self._wake()
                raise
        else:
            self.running += 1
        try:
            yield time.monotonic() - t0
        finally:
            self.running -= 1
            self._wake()

    def _wake(self) -> None:
        while self._heap and self.running < self.concurrency:
            w = heapq.heappop(self._heap)
            if w.future.done():
                continue
            self.running += 1
            w.future.set_result(None)
