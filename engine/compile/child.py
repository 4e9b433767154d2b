"""Runs one compile step in a child process group: JSON progress lines in, cancel = kill the group."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engine.compile.reporting import PARENT_ENV
from engine.compile.toolchain import toolchain_missing
from engine.errors import Cancelled, CompileFailed
from engine.progress import CancelToken, Progress, ProgressCallback

POLL_S = 0.1
STDERR_TAIL_LINES = 200
MESSAGE_TAIL_LINES = 12
TRACEBACK = "Traceback (most recent call last):"


@dataclass
class StepOutcome:
    """What a finished child reported: its `done` details and the tail of its stderr."""

    details: dict[str, Any] = field(default_factory=dict)
    stderr_tail: list[str] = field(default_factory=list)


def _popen(argv: Sequence[str], env: dict[str, str], cwd: Path | None) -> subprocess.Popen[bytes]:
    # A new session makes the child the leader of its own process group, so a cancel can kill it
    # together with anything it started, and a Ctrl+C in the engine's terminal does not reach it.
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(cwd) if cwd else None,
        **kwargs,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and its process group and reap it; safe to call on a finished child."""
    if proc.poll() is None:
        if sys.platform == "win32":
            proc.kill()
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _read_events(stream: IO[bytes], events: queue.Queue[dict[str, Any] | None]) -> None:
    try:
        for raw in stream:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # the protocol is JSON only; anything else is noise
            if isinstance(event, dict):
                events.put(event)
    finally:
        events.put(None)


def _read_tail(stream: IO[bytes], tail: deque[str]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)


def run_step(
    argv: Sequence[str],
    *,
    step: str,
    python: str,
    env: dict[str, str],
    progress: ProgressCallback,
    cancel: CancelToken,
    cwd: Path | None = None,
    hint: str,
) -> StepOutcome:
    """Run `argv` (a compile child speaking the reporting protocol) to completion.

    Progress events become Progress(stage="compile") reports, delivered on the calling thread.
    `cancel` is polled every POLL_S; a cancel kills the child's process group and raises Cancelled.
    A failure raises CompileFailed (or ToolchainMissing for a missing module) with the stderr tail.
    """
    cancel.raise_if_cancelled(step)
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    env = {**env, PARENT_ENV: str(os.getpid())}
    try:
        proc = _popen(argv, env, cwd)
    except OSError as e:
        raise CompileFailed(f"The {step} could not start {argv[0]}: {e}.", hint=hint) from e
    assert proc.stdout is not None
    assert proc.stderr is not None
    readers = [
        threading.Thread(target=_read_events, args=(proc.stdout, events), daemon=True),
        threading.Thread(target=_read_tail, args=(proc.stderr, tail), daemon=True),
    ]
    for t in readers:
        t.start()
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        stdout_open = True
        while stdout_open or proc.poll() is None:
            if cancel.cancelled:
                kill_group(proc)
                raise Cancelled(f"The {step} was cancelled ({cancel.reason}).")
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if event is None:
                stdout_open = False
                continue
            kind = event.get("event")
            if kind == "progress":
                fraction = event.get("fraction")
                progress(
                    Progress(
                        stage="compile",
                        message=str(event.get("message", "")),
                        fraction=float(fraction) if isinstance(fraction, int | float) else None,
                    )
                )
            elif kind == "done":
                done = event
            elif kind == "error":
                error = event
    finally:
        kill_group(proc)
        for t in readers:
            t.join(timeout=2)
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
    lines = list(tail)
    if error is not None and error.get("type") == "ModuleNotFoundError" and error.get("module"):
        raise toolchain_missing(python, [str(error["module"])], step=step)
    if error is not None or proc.returncode != 0 or done is None:
        raise _failure(step, proc.returncode, error, lines, hint)
    done.pop("event", None)
    return StepOutcome(details=done, stderr_tail=lines)


def _failure(
    step: str, returncode: int | None, error: dict[str, Any] | None, tail: list[str], hint: str
) -> CompileFailed:
    if error is not None:
        cause = f"{error.get('type', 'Error')}: {error.get('message', '')}".rstrip(": ")
    elif returncode is not None and returncode < 0:
        cause = f"the process was killed by signal {-returncode}"
        if -returncode == signal.SIGKILL:
            cause += " (out of memory?)"
    elif returncode not in (0, None):
        cause = f"the process exited with status {returncode}"
    else:
        cause = "the process ended without reporting that it finished"
    cause = cause.rstrip(" .")
    context = tail
    if error is not None and TRACEBACK in tail:
        # The cause already says what the traceback ends with; what the step printed before it
        # (the stage it reached, warnings) is the useful part for the message.
        context = tail[: len(tail) - 1 - tail[::-1].index(TRACEBACK)]
    shown = "\n".join(context[-MESSAGE_TAIL_LINES:])
    message = f"The {step} failed: {cause}."
    if shown:
        message += f"\nLast output:\n{shown}"
    return CompileFailed(
        message, hint=hint, step=step, cause=cause, returncode=returncode, stderr_tail=tail
    )
