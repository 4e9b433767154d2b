"""The service state file under the Ingot home: which process serves this home, where, since when.

Written by whichever process owns the home (the JSON-RPC engine or `ingot service start`), read by
the CLI and by a second engine (which then forwards instead of loading models twice). Mode 0600.
A file whose pid is dead, or now belongs to another process (its start time differs: the pid was
reused after a crash), or whose URL does not answer is stale and is replaced. Checking for a live
owner and writing the state happen under `ownership_lock`, so two processes never both claim a home.
Clients also check the owner's `/health` answer (`owner_answers_as`) before they send it the home
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock, Timeout

from server.secret import HomeSecret, health_proof

STATE_FILE = "service.json"
# Held around "is there a live owner? no: claim the home". Not `service-start.lock`: the CLI holds
# that one while it waits for the service it spawned, and that service must claim the home.
OWNERSHIP_LOCK = "service-owner.lock"
# Process start times of one process, read twice, agree to well within this; a pid reused by
# another process starts later than the owner did by at least the owner's lifetime.
START_TIME_SLACK_S = 1.0


@dataclass(frozen=True)
class ServiceState:
    pid: int
    url: str
    started_at: float
    kind: str  # "engine" (JSON-RPC process) or "service" (ingot service start)
    version: str
    home: str
    log_file: str | None = None
    # The owner process's start time (psutil create_time), which tells it from a later process
    # that got the same pid. Filled in by write_state; None in files older versions wrote.
    process_started_at: float | None = None


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def process_started_at(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def write_state(home: Path, state: ServiceState) -> Path:
    if state.process_started_at is None and state.pid == os.getpid():
        state = replace(state, process_started_at=process_started_at(state.pid))
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
        # Fields a newer version added are ignored, so its state file still names the owner.
        known = {f.name for f in fields(ServiceState)}
        return ServiceState(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def same_process(st: ServiceState) -> bool:
    """The state's pid is alive and is still the process that wrote it (not a reused pid)."""
    if not pid_alive(st.pid):
        return False
    if st.process_started_at is None:
        return True  # an older version's file: the pid is all there is to go on
    started = process_started_at(st.pid)
    return started is not None and abs(started - st.process_started_at) <= START_TIME_SLACK_S


def live_state(home: Path) -> ServiceState | None:
    """The state of a live owner of this home, or None (a stale file is removed)."""
    st = read_state(home)
    if st is None:
        return None
    if not same_process(st):
        clear_state(home, st.pid)
        return None
    return st


def owner_answers_as(
    st: ServiceState, health: Any, challenge: str | None = None, secret: HomeSecret | None = None
) -> bool:
    """Whether a `/health` answer comes from the owner `st` describes: the same pid and process
    start time and, when asked with `challenge`, proof that it knows the home `secret`. A client
    sends the secret only to a URL that passes, never to whatever listens on a dead owner's port."""
    if not isinstance(health, dict):
        return False
    if st.process_started_at is None and "pid" not in health:
        return True  # an owner of an older version, which says neither (nor needs the secret)
    if health.get("pid") != st.pid:
        return False
    started = health.get("processStartedAt")
    if st.process_started_at is not None:
        if not isinstance(started, int | float):
            return False
        if abs(float(started) - st.process_started_at) > START_TIME_SLACK_S:
            return False
    if challenge is not None and secret is not None:
        proof = health.get("proof")
        # As bytes: compare_digest raises TypeError for a str that is not ASCII.
        return isinstance(proof, str) and hmac.compare_digest(
            proof.encode("utf-8", "replace"),
            health_proof(secret.value, challenge).encode("utf-8"),
        )
    return True


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
