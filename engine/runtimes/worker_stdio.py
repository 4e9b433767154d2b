"""The model workers' side of their pipe: one JSON message a line on a private copy of stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO


class StdioWorker(Protocol):
    def handle(self, msg: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def serve_stdio(make_worker: Callable[[TextIO], StdioWorker]) -> None:
    """Runs a worker on this process's stdin/stdout until the engine closes the pipe, then exits."""
    # The wire is a private copy of stdout; fd 1 itself then points at stderr, so a stray print
    # or a native library writing to stdout can never corrupt the protocol.
    wire = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = make_worker(wire)
    for line in sys.stdin:
        if line.strip():
            worker.handle(json.loads(line))
    # The engine closed the pipe (unload, or the engine died): stop at once. os._exit skips
    # interpreter teardown, which could wait on a loop still inside the runtime.
    worker.close()
    wire.flush()
    os._exit(0)
