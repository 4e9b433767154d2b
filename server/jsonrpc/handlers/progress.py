"""LSP work-done progress for long operations, cancellable from the client."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from lsprotocol import types

from engine.downloads.transfer import human
from engine.progress import Progress
from server.jsonrpc.server import IngotServer

BYTE_COUNT = re.compile(r"\d\s*(?:B|KB|MB|GB)\b")
T = TypeVar("T")
# A download keeps what it fetched however it ends, local or forwarded.
DOWNLOAD_STOPPED = "Download stopped; it resumes next time."
DOWNLOAD_FAILED = "Download failed; what it fetched is kept for next time."


class WorkDone:
    """Reports engine Progress as `$/progress` begin/report/end on a work-done token.

    A token the client gave is used as is; otherwise one is created with
    `window/workDoneProgress/create` when the client supports it. `window/workDoneProgress/cancel`
    on the token cancels `task` (the request's handler)."""

    registry: ClassVar[dict[Any, asyncio.Task[Any]]] = {}

    def __init__(self, server: IngotServer, token: Any, title: str) -> None:
        self.server = server
        self.token = token
        self.title = title
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self._ended = False

    @classmethod
    async def start(cls, server: IngotServer, token: Any, title: str) -> WorkDone:
        if token is None:
            caps = server.protocol.client_capabilities
            window = caps.window if caps else None
            if window and window.work_done_progress:
                token = f"ingot-{secrets.token_hex(6)}"
                try:
                    await asyncio.wait_for(server.work_done_progress.create_async(token), timeout=5)
                except Exception:
                    token = None
        wd = cls(server, token, title)
        if token is not None:
            if wd.task is not None:
                cls.registry[token] = wd.task
            server.work_done_progress.begin(
                token,
                types.WorkDoneProgressBegin(title=title, cancellable=True, percentage=0),
            )
        return wd

    def report(self, p: Progress) -> None:
        if self.token is None or self._ended:
            # An operation that outlives its request (a shared load goes on after a cancel)
            # must not report on a token that has already ended.
            return
        pct = None if p.fraction is None else max(0, min(100, int(p.fraction * 100)))
        message = p.message
        if p.bytes_total and not BYTE_COUNT.search(message):
            # Only when the engine's message does not already say how far it is.
            counts = f"{human(p.bytes_done or 0)} of {human(p.bytes_total)}"
            message = f"{message} ({counts})" if message else counts
        self.server.work_done_progress.report(
            self.token, types.WorkDoneProgressReport(message=message, percentage=pct)
        )

    def end(self, message: str) -> None:
        if self.token is None or self._ended:
            return
        self._ended = True
        WorkDone.registry.pop(self.token, None)
        self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))


async def reporting(
    server: IngotServer,
    token: Any,
    title: str,
    run: Callable[[WorkDone], Awaitable[T]],
    *,
    done: str,
    stopped: str,
    failed: str | Callable[[BaseException], str] = "Failed",
) -> T:
    """Runs one request's long operation under work-done progress, so that every way it ends
    ends the progress: `done`, `stopped` when the request is cancelled, `failed` (or what it
    says of the error) on an error."""
    wd = await WorkDone.start(server, token, title)
    try:
        result = await run(wd)
    except asyncio.CancelledError:
        wd.end(stopped)
        raise
    except BaseException as e:
        wd.end(failed if isinstance(failed, str) else failed(e))
        raise
    wd.end(done)
    return result


def cancel_token(token: Any) -> bool:
    task = WorkDone.registry.pop(token, None)
    if task is None or task.done():
        return False
    task.cancel()
    return True
