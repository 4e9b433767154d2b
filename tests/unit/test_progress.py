"""WorkDone: nothing is reported on a token after its end (a shared load outlives a cancel)."""

from __future__ import annotations

from typing import Any

from engine.progress import Progress
from server.jsonrpc.handlers.progress import WorkDone


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

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
