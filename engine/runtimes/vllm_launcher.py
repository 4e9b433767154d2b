"""Runs vLLM's OpenAI server as a child and ends its whole process group when the engine goes away.

Run by path with vLLM's interpreter (standard library only; the engine package is not importable
there): `python vllm_launcher.py -- <server args>`. The server leads its own process group, so
vLLM's EngineCore and worker processes can be stopped together. On stdout the launcher prints
`{"pid": N}` when the server starts and `{"exit": CODE}` when it ends (negative: killed by that
signal); the server's output goes to stderr. When stdin closes (the engine asked it to stop, or
the engine died without asking) it stops the server's group, so a killed engine never leaves a
model in memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

# vLLM's own entry point; the older module path still works in 0.32 but is deprecated.
ENTRY_POINTS = ("vllm.entrypoints.launchers.api_server.entry", "vllm.entrypoints.openai.api_server")
STOP_GRACE_S = 10.0


def entry_point() -> str:
    # This folder holds the engine's vllm.py: it must not shadow the real package here.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    # Looked up by file, not find_spec("vllm.x.y"): that would import vLLM into the launcher.
    spec = importlib.util.find_spec("vllm")
    root = Path(spec.origin).parent if spec and spec.origin else None
    for name in ENTRY_POINTS:
        rel = Path(*name.split(".")[1:]).with_suffix(".py")
        if root is not None and (root / rel).is_file():
            return name
    return ENTRY_POINTS[-1]


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    args = argv[1:] if argv[:1] == ["--"] else argv
    server = subprocess.Popen(
        [sys.executable, "-m", entry_point(), *args],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),
        stderr=sys.stderr.fileno(),
        process_group=0,
    )
    print(json.dumps({"pid": server.pid}), flush=True)

    def watch_stdin() -> None:
        # Unbuffered reads: a daemon thread blocked in a buffered read aborts the interpreter's
        # shutdown ("could not acquire lock for stdin").
        while os.read(0, 4096):
            pass  # EOF: the engine closed the pipe, or is gone
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(STOP_GRACE_S)
        kill_group(server.pid)

    threading.Thread(target=watch_stdin, daemon=True).start()
    # A SIGTERM to the launcher means "stop": pass it on, as on stdin EOF.
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGTERM))
    code = server.wait()
    # The server is gone (stopped or crashed): its EngineCore and workers must not outlive it.
    kill_group(server.pid)
    print(json.dumps({"exit": code}), flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    # os._exit: no interpreter shutdown while the stdin thread may still be reading.
    os._exit(main(sys.argv[1:]))
