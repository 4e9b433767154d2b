"""LoopThread: the CLI's asyncio loop, run in a background thread.

The main thread stays free for `input()` and for Ctrl-C, which Python only delivers there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How long a cancelled operation gets to clean up (close a stream, flush a partial download).
CANCEL_GRACE_S = 30.0
SHUTDOWN_S = 60.0


class LoopThread:
    """Runs coroutines on a private loop. `run()` blocks the caller; a KeyboardInterrupt while it
    waits cancels the coroutine, waits for its cleanup, then re-raises."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="ingot-cli-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        finished = threading.Event()

        async def wrapped() -> T:
            try:
                return await coro
            finally:
                finished.set()

        fut = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            # The concurrent future reports "cancelled" at once; the task only sees the
            # cancellation on its next await, and its cleanup (e.g. the engine cancelling a
            # download) must finish before the process exits.
            fut.cancel()
            finished.wait(CANCEL_GRACE_S)
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def shutdown() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            # Worker threads (a download, a generation) must end before the interpreter does.
            await self.loop.shutdown_default_executor()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(SHUTDOWN_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(SHUTDOWN_S)
        if not self._thread.is_alive():
            self.loop.close()
