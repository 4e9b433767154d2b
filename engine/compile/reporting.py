"""The child side of a compile step: JSON progress lines to the parent, and a watch on the parent."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

# Exit status of a child whose parent went away (not an error of the step itself).
ORPHANED_EXIT = 70
# The environment variable through which the parent passes its process id.
PARENT_ENV = "INGOT_COMPILE_PARENT_PID"


class StepReporter:
    """Owns the child's real stdout for the JSON-line protocol.

    Libraries print freely (the model builder, transformers warnings, C++ logs written straight to
    file descriptor 1), so the protocol gets a private duplicate of stdout and fd 1 is pointed at
    stderr: nothing a library prints can corrupt a progress line.
    """

    def __init__(self) -> None:
        sys.stdout.flush()
        private = os.dup(1)
        os.dup2(2, 1)
        self._out: TextIO = os.fdopen(private, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def _emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._out.flush()

    def progress(self, fraction: float | None, message: str) -> None:
        self._emit({"event": "progress", "fraction": fraction, "message": message})

    def done(self, **details: Any) -> None:
        self._emit({"event": "done", **details})

    def error(self, exc: BaseException) -> None:
        event: dict[str, Any] = {"event": "error", "type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            event["module"] = exc.name.split(".")[0]
        self._emit(event)


def watch_parent(interval_s: float = 0.5) -> None:
    """Exit when the parent dies: a crashed engine must not leave a compile running for nobody."""
    # The parent names itself: a parent that died before this line ran would otherwise go unseen.
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def run() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(ORPHANED_EXIT)

    threading.Thread(target=run, name="watch-parent", daemon=True).start()


def run_as_child(main: Callable[[StepReporter], dict[str, Any] | None]) -> int:
    """Run a step's body with a reporter; report any failure as an error event and exit 1."""
    reporter = StepReporter()
    watch_parent()
    try:
        details = main(reporter) or {}
    except BaseException as exc:  # every failure must reach the parent as an event
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            reporter.done()
            return 0
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        reporter.error(exc)
        return 1
    reporter.done(**details)
    return 0
