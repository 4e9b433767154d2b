"""VllmServer: one vLLM OpenAI server process on a private loopback port, started, watched, stopped.

The server runs under vllm_launcher.py in its own session: the launcher stops the server's whole
process group when the engine closes its stdin or dies, and reports the server's pid and exit code.
An exit nobody asked for is reported with the exit code and the tail of vLLM's log, so the loader
can mark the model failed and start it again on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx2 as httpx

from engine.errors import LoadFailed
from engine.progress import Progress, ProgressCallback
from engine.runtimes.child_process import ChildProcess, describe_exit, kill_group

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("vllm_launcher.py")
# vLLM's log lines that mark progress while loading, and how far along each one is.
MILESTONES = (
    ("Starting to load model", 0.25, "Loading weights"),
    ("Loading weights took", 0.5, "Weights loaded; sizing the KV cache"),
    ("KV cache size", 0.7, "KV cache allocated; warming up"),
    ("init engine", 0.85, "Engine ready; starting the API server"),
    ("Starting vLLM server on", 0.95, "API server starting"),
)
# How long a load usually takes on a small CPU machine: progress creeps towards this, no further.
TYPICAL_LOAD_S = 70.0
# The launcher gives the server 10 s to stop on SIGTERM before killing its group.
STOP_GRACE_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class VllmServer(ChildProcess):
    def __init__(
        self,
        python: str,
        args: list[str],
        *,
        env: dict[str, str],
        name: str,
        log_file: Path | None = None,
    ) -> None:
        super().__init__([python, str(LAUNCHER), "--", *args], env=env, name=name)
        self.log_file = log_file
        self.server_pid: int | None = None
        self.exit_code: int | None = None
        self.log_tail: deque[str] = deque(maxlen=60)
        self._on_line: Callable[[str], None] | None = None
        self._ended = asyncio.Event()
        self._log_read = asyncio.Event()
        self._pid_known = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self._ended.is_set()

    async def wait_ended(self, timeout_s: float) -> bool:
        """True once the server has ended (waiting at most `timeout_s`)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._ended.wait()
        return self._ended.is_set()

    async def start(self) -> None:
        await self._spawn({"control": self._read_control, "log": self._read_log})

    async def _read_control(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(raw)
                if "pid" in msg:
                    self.server_pid = int(msg["pid"])
                    self._pid_known.set()
                elif "exit" in msg:
                    self.exit_code = int(msg["exit"])
        # Only the launcher holds this pipe: it has ended. Whatever vLLM left behind (EngineCore,
        # workers) goes with it now, before waiting: they hold the log pipe, and on Python 3.11
        # wait() returns only once every pipe of the child is closed.
        kill_group(self.server_pid)
        code = await self.proc.wait()
        closing = self._ending(code)
        self._pid_known.set()
        self._kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._log_read.wait(), 1.0)
        self._finish(self.exit_code if self.exit_code is not None else code, closing)

    async def _read_log(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        sink: IO[str] | None = None
        if self.log_file is not None:
            with contextlib.suppress(OSError):
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                # The previous run's log survives one restart: it may say why that run died.
                if self.log_file.exists():
                    self.log_file.replace(self.log_file.with_suffix(".log.1"))
                sink = self.log_file.open("w", encoding="utf-8")
        try:
            async for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                self.log_tail.append(line)
                if sink is not None:
                    sink.write(line + "\n")
                    sink.flush()
                if self._on_line is not None:
                    self._on_line(line)
        finally:
            self._log_read.set()
            if sink is not None:
                sink.close()

    def tail(self, n: int = 8) -> str:
        # Route listings and uvicorn access lines say nothing about why it ended.
        useful = [ln for ln in self.log_tail if "Route:" not in ln and '" 200 OK' not in ln]
        return " | ".join(useful[-n:])

    def _finish(self, code: int, closing: bool) -> None:
        if self._ended.is_set():
            return
        self.exit_code = code
        self._ended.set()
        self._exited(code, self.tail(), closing)

    def _kill(self) -> None:
        # The server's own session as well as the launcher's.
        kill_group(self.server_pid)
        kill_group(self.pid)

    async def wait_ready(
        self, url: str, *, timeout_s: float, progress: ProgressCallback, what: str
    ) -> None:
        """Poll /health until it answers 200, reporting vLLM's load milestones as progress.
        Raises LoadFailed (with the log tail) if the server exits or the time runs out."""
        started = time.monotonic()
        reached = 0.05

        def on_line(line: str) -> None:
            nonlocal reached
            for marker, fraction, message in MILESTONES:
                if marker in line and fraction > reached:
                    reached = fraction
                    progress(Progress("load", f"{what}: {message}", fraction))

        self._on_line = on_line
        try:
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
                while True:
                    if self._ended.is_set():
                        raise LoadFailed(
                            f"vLLM could not start {what}: the server "
                            f"{describe_exit(self.exit_code or 0)}: {self.tail(12)}",
                            hint="See the log tail above; `ingot model info` shows the vLLM plan.",
                        )
                    elapsed = time.monotonic() - started
                    if elapsed > timeout_s:
                        raise LoadFailed(
                            f"vLLM did not answer within {timeout_s:.0f} s while loading {what}: "
                            f"{self.tail(12)}",
                            hint="Raise INGOT_VLLM_LOAD_TIMEOUT, or check the vLLM log.",
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        r = await http.get(url + "/health")
                        if r.status_code == 200:
                            return
                    # Between milestones, creep forward so the bar never looks stuck.
                    creep = min(0.9, elapsed / TYPICAL_LOAD_S * 0.9)
                    if creep > reached + 0.05:
                        reached = creep
                        progress(Progress("load", f"{what}: starting vLLM", reached))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.25):
                            await self._ended.wait()
        finally:
            self._on_line = None

    async def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the server and everything it started; returns when the processes are gone."""
        await super().close(grace_s)
        self._kill()
