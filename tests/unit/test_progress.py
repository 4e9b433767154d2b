"""WorkDone: nothing is reported on a token after its end (a shared load outlives a cancel), and
`reporting` ends the progress however the operation ends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from engine.progress import Progress
from server.jsonrpc.handlers.progress import WorkDone, reporting


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def begin(self, token: Any, value: Any) -> None:
        self.sent.append(("begin", value.title))

    def report(self, token: Any, value: Any) -> None:
        self.sent.append(("report", value.message))

    def end(self, token: Any, value: Any) -> None:
        self.sent.append(("end", value.message))


class Server:
    def __init__(self) -> None:
        self.work_done_progress = Recorder()


async def test_no_report_after_end() -> None:
    server = Server()
    wd = WorkDone(server, "tok", "Loading")  # type: ignore[arg-type]
    wd.report(Progress("load", "Starting", 0.0))
    wd.end("Cancelled")
    wd.report(Progress("load", "Loading", 0.1))  # the load goes on for others
    wd.end("Loaded")
    assert server.work_done_progress.sent == [("report", "Starting"), ("end", "Cancelled")]


async def _run(op: Any) -> list[tuple[str, Any]]:
    server = Server()
    with contextlib.suppress(asyncio.CancelledError, OSError):
        await reporting(server, "tok", "Job", op, done="Done", stopped="Stopped", failed="Failed")  # type: ignore[arg-type]
    return server.work_done_progress.sent


async def test_reporting_ends_done_stopped_or_failed() -> None:
    async def ok(wd: WorkDone) -> int:
        wd.report(Progress("x", "Half", 0.5))
        return 1

    async def cancelled(wd: WorkDone) -> int:
        raise asyncio.CancelledError

    async def broken(wd: WorkDone) -> int:
        raise OSError("disk full")

    assert await _run(ok) == [("begin", "Job"), ("report", "Half"), ("end", "Done")]
    assert await _run(cancelled) == [("begin", "Job"), ("end", "Stopped")]
    assert await _run(broken) == [("begin", "Job"), ("end", "Failed")]


async def test_reporting_passes_the_error_on() -> None:
    async def broken(wd: WorkDone) -> int:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await reporting(Server(), "tok", "Job", broken, done="D", stopped="S")  # type: ignore[arg-type]


async def test_reporting_passes_a_cancel_on() -> None:
    async def cancelled(wd: WorkDone) -> int:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await reporting(Server(), "tok", "Job", cancelled, done="D", stopped="S")  # type: ignore[arg-type]


async def test_reporting_can_say_what_an_error_means() -> None:
    async def refused(wd: WorkDone) -> int:
        raise ConnectionRefusedError

    server = Server()
    with pytest.raises(ConnectionRefusedError):
        await reporting(
            server,  # type: ignore[arg-type]
            "tok",
            "Job",
            refused,
            done="D",
            stopped="S",
            failed=lambda e: "Retrying" if isinstance(e, ConnectionRefusedError) else "Failed",
        )
    assert server.work_done_progress.sent[-1] == ("end", "Retrying")
