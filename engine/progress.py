"""Progress reports and cancellation tokens shared by long operations (download, compile, load)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress report. `stage` is e.g. "download", "compile", "load".

    Byte counts are set for downloads; `fraction` (0..1) is always the best estimate of overall
    progress, or None when unknown.
    """

    stage: str
    message: str
    fraction: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    file: str | None = None
    file_bytes_done: int | None = None
    file_bytes_total: int | None = None


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that drops every report."""


@dataclass
class CancelToken:
    """A thread-safe cancellation flag: set from the event loop, checked from worker threads."""

    _event: threading.Event = field(default_factory=threading.Event)
    reason: str = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, what: str = "operation") -> None:
        if self._event.is_set():
            raise Cancelled(f"The {what} was cancelled ({self.reason}).")
