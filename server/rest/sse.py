"""Server-sent events over an aiohttp StreamResponse (OpenAI streams and Ingot's event streams)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    # Reverse proxies (nginx) buffer responses unless told not to; tokens must flow as produced.
    "X-Accel-Buffering": "no",
}

# Exceptions a write raises once the client has gone away.
CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionError)


class SseStream:
    def __init__(self, request: web.Request, headers: dict[str, str] | None = None) -> None:
        self.request = request
        self.response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **(headers or {})})
        self.opened = False

    async def open(self) -> None:
        if not self.opened:
            self.opened = True
            await self.response.prepare(self.request)

    async def send(self, data: str, event: str | None = None) -> None:
        """`data` must be one line (JSON from json.dumps is)."""
        if not self.opened:
            await self.open()
        head = f"event: {event}\ndata: " if event else "data: "
        await self.response.write((head + data + "\n\n").encode("utf-8"))

    async def send_json(self, obj: Any, event: str | None = None) -> None:
        await self.send(json.dumps(obj, separators=(",", ":")), event)

    async def comment(self, text: str = "keep-alive") -> None:
        await self.response.write(f": {text}\n\n".encode())

    async def close(self) -> web.StreamResponse:
        if self.opened:
            with contextlib.suppress(*CLIENT_GONE):
                await self.response.write_eof()
        return self.response


async def pump(
    queue: asyncio.Queue[T], task: asyncio.Future[Any], send: Callable[[T], Awaitable[None]]
) -> None:
    """Forward queued items to `send` while `task` runs, then the ones left once it is done."""
    while True:
        if not queue.empty():
            await send(queue.get_nowait())
            continue
        if task.done():
            return
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            await send(getter.result())
