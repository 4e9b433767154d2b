"""WorkerProcess over a tiny real child: replies by id, an exit nobody asked for fails what waits
(with the exit code and stderr) and is reported once, close() is quiet and stops a child that
lingers."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time

import psutil
import pytest

from engine.runtimes.worker_process import EXIT, WorkerFailed, WorkerProcess

# Echoes {"id", "result": op}; "die" writes to stderr and exits 3; "hang": see below.
CHILD = textwrap.dedent(
    """
    import json, signal, subprocess, sys, time
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "die":
            print("out of cheese", file=sys.stderr, flush=True)
            sys.exit(3)
        if msg["op"] == "hang":
            # Ignores the end of its stdin, and has started a grandchild of its own.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            print(json.dumps({"id": msg["id"], "result": kid.pid}), flush=True)
            while True:
                time.sleep(1)
        print(json.dumps({"id": msg["id"], "result": msg["op"]}), flush=True)
    """
)


def child(name: str = "test worker") -> WorkerProcess:
    return WorkerProcess([sys.executable, "-c", CHILD], name=name)


async def test_calls_get_their_replies_and_close_is_quiet() -> None:
    w = child()
    exits: list[str] = []
    w.on_exit(exits.append)
    await w.start()
    assert await w.call("ping") == "ping"
    await w.close()
    assert not w.alive and exits == []
    assert w.exit_reason == "The test worker was stopped."
    with pytest.raises(WorkerFailed, match="was stopped"):
        await w.call("ping")


async def test_a_crash_fails_waiters_and_is_reported_once() -> None:
    w = child()
    exits: list[str] = []
    w.on_exit(exits.append)
    await w.start()
    _, stream = w.open_stream()
    with pytest.raises(WorkerFailed, match=r"exited with code 3: out of cheese"):
        await w.call("die")
    assert (await stream.get())[EXIT] == w.exit_reason
    assert exits == ["The test worker exited with code 3: out of cheese"]
    await w.close()
    assert len(exits) == 1


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_close_kills_a_child_that_lingers_and_what_it_started() -> None:
    w = child()
    await w.start()
    grandchild = await w.call("hang")
    pid = w.pid
    assert pid is not None and not gone(grandchild)
    async with asyncio.timeout(10):
        await w.close(grace_s=0.5)
    assert gone(pid)
    # Its process group went with it (the grandchild is reaped by init, so poll briefly).
    deadline = time.monotonic() + 5
    while not gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived close()"
        await asyncio.sleep(0.05)
