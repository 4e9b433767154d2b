"""The service state file under the Ingot home: which process serves this home, where, since when.

Written by whichever process owns the home (the JSON-RPC engine or `ingot service start`), read by
the CLI and by a second engine (which then forwards instead of loading models twice). Mode 0600.
A file whose pid is dead or whose URL does not answer is stale and is replaced. Checking for a live
owner and writing the state happen under `ownership_lock`, so two processes never both claim a home.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

STATE_FILE = "service.json"
# Held around "is there a live owner? no: claim the home". Not `service-start.lock`: the CLI holds
# that one while it waits for the service it spawned, and that service must claim the home.
OWNERSHIP_LOCK = "service-owner.lock"


@dataclass(frozen=True)
class ServiceState:
    pid: int
    url: str
    started_at: float
    kind: str  # "engine" (JSON-RPC process) or "service" (ingot service start)
    version: str
    home: str
    log_file: str | None = None


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def write_state(home: Path, state: ServiceState) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = state_path(home)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=2)
    os.replace(tmp, path)
    return path


def read_state(home: Path) -> ServiceState | None:
    try:
        data = json.loads(state_path(home).read_text(encoding="utf-8"))
        return ServiceState(**data)
    except (OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_state(home: Path) -> ServiceState | None:
    """The state of a live owner of this home, or None (a stale file is removed)."""
    st = read_state(home)
    if st is None:
        return None
    if not pid_alive(st.pid):
        clear_state(home, st.pid)
        return None
    return st


def clear_state(home: Path, pid: int | None = None) -> None:
    """Remove the state file (only if it is still ours, when `pid` is given)."""
    st = read_state(home)
    if pid is not None and st is not None and st.pid != pid:
        return
    with contextlib.suppress(OSError):
        state_path(home).unlink()


def now() -> float:
    return time.time()


@contextlib.asynccontextmanager
async def ownership_lock(home: Path, wait_s: float = 60.0) -> AsyncIterator[None]:
    """Hold the home's ownership lock (across processes) without blocking the event loop."""
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(home / OWNERSHIP_LOCK), thread_local=False)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.acquire(timeout=0)
            break
        except Timeout:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Another Ingot process has held {home / OWNERSHIP_LOCK} for {wait_s:.0f} s."
                ) from None
            await asyncio.sleep(0.05)
    try:
        yield
    finally:
        lock.release()
