"""WorkerProcess: the engine's side of a child process that speaks JSON lines on stdin/stdout.

Calls get replies matched by id, generations get a queue of events, and an exit nobody asked for
(a crash, the OOM killer) fails whatever was waiting with the exit code and the tail of the
child's stderr (ChildProcess reports it to the loader).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from typing import Any

from engine.errors import IngotError
from engine.runtimes.child_process import ChildProcess

log = logging.getLogger(__name__)

# A rendered chat or a long prompt travels as one line.
LINE_LIMIT = 256 * 1024 * 1024
EXIT = "exit"


class WorkerFailed(IngotError):
    kind = "generation_failed"


class WorkerProcess(ChildProcess):
    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, name: str) -> None:
        super().__init__(argv, env=env, name=name)
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self._stderr_read = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        await self._spawn(
            {"events": self._read_events, "stderr": self._read_stderr}, limit=LINE_LIMIT
        )

    def send(self, msg: dict[str, Any]) -> None:
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise WorkerFailed(self._gone_message())
        # ASCII JSON: a lone surrogate in a prompt travels escaped instead of failing to encode.
        line = json.dumps(msg, separators=(",", ":")) + "\n"
        self.proc.stdin.write(line.encode("utf-8"))

    async def call(self, op: str, **fields: Any) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[rid] = fut
        try:
            self.send({"op": op, "id": rid, **fields})
            return await fut
        finally:
            self._calls.pop(rid, None)

    def open_stream(self) -> tuple[int, asyncio.Queue[dict[str, Any]]]:
        rid = next(self._ids)
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if not self.alive:
            q.put_nowait({EXIT: self._gone_message()})
        self._streams[rid] = q
        self._no_streams.clear()
        return rid, q

    def close_stream(self, rid: int) -> None:
        self._streams.pop(rid, None)
        if not self._streams:
            self._no_streams.set()

    async def streams_closed(self) -> None:
        """Returns once no generation is streaming from this worker."""
        await self._no_streams.wait()

    async def _read_events(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                msg = json.loads(raw)
                rid = msg.get("id")
                if (q := self._streams.get(rid)) is not None:
                    q.put_nowait(msg)
                elif (fut := self._calls.get(rid)) is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(WorkerFailed(str(msg["error"])))
                    else:
                        fut.set_result(msg.get("result"))
        except Exception:
            log.exception("%s: unreadable message from the worker", self.name)
            # Its replies can no longer be matched: end it rather than wait on it forever.
            self._kill()
        code = await self.proc.wait()
        closing = self._ending(code)
        # Its last words (a traceback, "Killed") may still be in the pipe.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stderr_read.wait(), 1.0)
        reason = self._exited(code, " | ".join(list(self.stderr_tail)[-5:]), closing)
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(WorkerFailed(reason))
        for q in self._streams.values():
            q.put_nowait({EXIT: reason})

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        try:
            async for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self.stderr_tail.append(line)
                    log.debug("%s: %s", self.name, line)
        finally:
            self._stderr_read.set()

    def _gone_message(self) -> str:
        return self.exit_reason or f"The {self.name} is not running."
