"""WorkerProcess: the engine's side of a child process that speaks JSON lines on stdin/stdout.

Calls get replies matched by id, generations get a queue of events, and an exit nobody asked for
(a crash, the OOM killer) fails whatever was waiting and is reported with the exit code and the
tail of the child's stderr, so the loader can mark the model failed and load it again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.errors import IngotError

log = logging.getLogger(__name__)

# A rendered chat or a long prompt travels as one line.
LINE_LIMIT = 256 * 1024 * 1024
EXIT = "exit"


class WorkerFailed(IngotError):
    kind = "generation_failed"


class WorkerProcess:
    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, name: str) -> None:
        self.argv = argv
        self.env = env
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._on_exit: list[Callable[[str], None]] = []
        self._closing = False
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self.exit_reason: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            limit=LINE_LIMIT,
            # Its own process group: a terminal's Ctrl-C goes to the engine, which decides, and
            # close() can stop everything the child started.
            start_new_session=True,
        )
        self._tasks = [
            asyncio.create_task(self._read_events(), name=f"{self.name}-events"),
            asyncio.create_task(self._read_stderr(), name=f"{self.name}-stderr"),
        ]

    def on_exit(self, callback: Callable[[str], None]) -> None:
        """Called once, with a reason, if the process ends without close() being asked for."""
        self._on_exit.append(callback)

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
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        code = await self.proc.wait()
        self._ended(code)

    async def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                log.debug("%s: %s", self.name, line)

    def _gone_message(self) -> str:
        return self.exit_reason or f"The {self.name} process is not running."

    def _ended(self, code: int) -> None:
        if self._closing:
            self.exit_reason = f"The {self.name} process was stopped."
        else:
            what = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = " | ".join(list(self.stderr_tail)[-5:])
            self.exit_reason = f"The {self.name} process {what}" + (f": {tail}" if tail else ".")
            log.warning("%s", self.exit_reason)
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(WorkerFailed(self.exit_reason))
        for q in self._streams.values():
            q.put_nowait({EXIT: self.exit_reason})
        if not self._closing:
            for cb in self._on_exit:
                try:
                    cb(self.exit_reason)
                except Exception:
                    log.exception("%s: exit callback failed", self.name)

    async def close(self, grace_s: float = 5.0) -> None:
        """Ask the process to end (close its stdin), then stop its whole group if it lingers."""
        self._closing = True
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2.0)
