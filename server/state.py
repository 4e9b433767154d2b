"""The service state file under the Ingot home: which process serves this home, where, since when.

Written by whichever process owns the home (the JSON-RPC engine or `ingot service start`), read by
the CLI and by a second engine (which then forwards instead of loading models twice). Mode 0600.
A file whose pid is dead or whose URL does not answer is stale and is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

STATE_FILE = "service.json"


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
