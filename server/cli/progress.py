"""ProgressView: download and compile progress on stderr.

Rich bars (bytes, speed, ETA) on a terminal, a few plain lines otherwise; one bar per stage and
step, so a compile after a download, or a second compile step, gets its own.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any

from server.cli.client import ProgressReport
from server.cli.render import human_bytes

PLAIN_STEP = 0.10  # print a plain line every 10 %
PLAIN_EVERY_S = 5.0  # ... or every few seconds when the fraction is unknown


class ProgressView:
    def __init__(self, title: str, *, enabled: bool = True) -> None:
        self.title = title
        self.enabled = enabled
        self.fancy = enabled and sys.stderr.isatty()
        self._lock = threading.Lock()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._last_plain: dict[str, tuple[float, float, str]] = {}
        self.seen = False

    def __enter__(self) -> ProgressView:
        if self.fancy:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.fields[stage]:<9}[/bold]"),
                BarColumn(bar_width=30),
                TaskProgressColumn(),
                TextColumn("{task.fields[amount]}"),
                TextColumn("{task.fields[speed]}"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                TextColumn("[dim]{task.fields[message]}[/dim]"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    def __call__(self, r: ProgressReport) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.seen = True
            if self._progress is not None:
                self._fancy(r)
            else:
                self._plain(r)

    def _fancy(self, r: ProgressReport) -> None:
        task = self._tasks.get(r.stage)
        has_bytes = bool(r.bytes_total)
        total = float(r.bytes_total or 1) if has_bytes else 1.0
        done = float(r.bytes_done or 0) if has_bytes else float(r.fraction or 0.0)
        # A stage may run several steps (a GGUF conversion, then an ONNX build), each from 0 to
        # 100 %: a fraction that falls back starts a new bar rather than rewinding one.
        if task is not None and not has_bytes and done < self._progress.tasks[task].completed - 0.2:
            task = None
        if task is None:
            # A new stage: finish the bars of the earlier ones (a download before a compile).
            for t in self._tasks.values():
                tk = self._progress.tasks[t]
                if tk.total is not None:
                    self._progress.update(t, completed=tk.total)
            task = self._progress.add_task(
                r.stage, total=total, stage=r.stage, amount="", speed="", message=""
            )
            self._tasks[r.stage] = task
        amount = speed = ""
        if has_bytes:
            tk = self._progress.tasks[task]
            amount = f"{human_bytes(r.bytes_done or 0)}/{human_bytes(r.bytes_total)}"
            rate = tk.speed
            speed = f"{human_bytes(rate)}/s" if rate else ""
        message = r.message if not has_bytes else (r.file or "")
        self._progress.update(
            task,
            total=total,
            completed=done,
            amount=amount,
            speed=speed,
            message=message[:60],
        )

    def _plain(self, r: ProgressReport) -> None:
        now = time.monotonic()
        frac = r.fraction if r.fraction is not None else -1.0
        last = self._last_plain.get(r.stage)
        if last is not None:
            last_t, last_f, last_msg = last
            step_due = frac >= 0 and frac - last_f >= PLAIN_STEP
            time_due = now - last_t >= PLAIN_EVERY_S
            changed = frac < 0 and r.message != last_msg
            if not (step_due or time_due or changed or frac >= 1.0 > last_f):
                return
        self._last_plain[r.stage] = (now, frac, r.message)
        parts = [f"{r.stage}:"]
        if frac >= 0:
            parts.append(f"{frac * 100:3.0f}%")
        if r.bytes_total:
            # The engine's message repeats the byte counts: the file being fetched says more.
            parts.append(f"{human_bytes(r.bytes_done or 0)} / {human_bytes(r.bytes_total)}")
            parts.append(r.file or r.message)
        elif r.message:
            parts.append(r.message)
        sys.stderr.write(" ".join(parts) + "\n")
        sys.stderr.flush()
