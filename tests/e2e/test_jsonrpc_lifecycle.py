"""End-to-end: LSP lifecycle rules of the real engine over bare stdio frames — -32002 before
`initialize`, one `initialize` per connection, exit codes, end of input, parent death, bad bytes —
and prompts staying out of the log."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.state import read_state
from tests.e2e.rpc_client import RawEngine, engine

MODEL = "smollm2-135m"


async def test_requests_before_initialize_get_32002_and_initialize_still_works(
    seeded_home: Path,
) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        msg_id = e.request("ingot/service/status")
        err = (await e.response(msg_id))["error"]
        assert err["code"] == -32002 and "initialize" in err["message"]
        await e.initialize()
        ok = await e.response(e.request("ingot/service/status"))
        assert ok["result"]["pid"] == e.proc.pid
        e.request("shutdown")
        e.notify("exit")
        assert await e.exit_code() == 0
    finally:
        await e.close()


async def test_second_initialize_is_refused_and_the_engine_is_unchanged(seeded_home: Path) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        ready = [m async for m in _until_notification(e, "ingot/serviceReady")]
        first = read_state(seeded_home)
        assert first is not None and first.pid == e.proc.pid
        again = e.request("initialize", {"capabilities": {}, "initializationOptions": {}})
        err = (await e.response(again))["error"]
        assert err["code"] == -32600 and "already initialized" in err["message"]
        e.notify("initialized", {})  # a second `initialized` must not start a second REST port
        seen = [m async for m in _until_response(e, e.request("ingot/service/status"))]
        status = seen[-1]["result"]
        assert status["restUrl"] == first.url and status["pid"] == e.proc.pid
        assert read_state(seeded_home) == first
        notes = [m["method"] for m in [*ready, *seen] if "method" in m]
        assert notes.count("ingot/serviceReady") == 1, notes
    finally:
        await e.close()


async def _until_response(e: RawEngine, msg_id: int) -> AsyncIterator[dict[str, Any]]:
    """Every message up to and including the response to `msg_id`."""
    while True:
        msg = await e.read()
        yield msg
        if msg.get("id") == msg_id and "method" not in msg:
            return


async def _until_notification(e: RawEngine, method: str) -> AsyncIterator[dict[str, Any]]:
    while True:
        msg = await e.read()
        yield msg
        if msg.get("method") == method:
            return


async def test_exit_without_shutdown_exits_1(seeded_home: Path) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        e.notify("exit")
        assert await e.exit_code() == 1
        assert read_state(seeded_home) is None
    finally:
        await e.close()


async def test_end_of_input_exits_0(seeded_home: Path) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        await e.response(e.request("ingot/service/status"))
        assert e.proc.stdin is not None
        e.proc.stdin.close()
        assert await e.exit_code() == 0
        assert read_state(seeded_home) is None
    finally:
        await e.close()


async def test_engine_exits_when_its_parent_process_dies(seeded_home: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(3)"
    )
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize(processId=parent.pid)
        await e.response(e.request("ingot/service/status"))
        assert e.proc.returncode is None
        await asyncio.wait_for(parent.wait(), 10)  # reaped: the pid is gone
        assert await e.exit_code(timeout=15) == 0
        assert read_state(seeded_home) is None
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        await e.close()


async def test_bad_bytes_get_error_responses_and_the_engine_keeps_running(
    seeded_home: Path,
) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        e.send_bytes(b'{"jsonrpc": "2.0", "id": 99, "method": ')  # not JSON
        parse = await e.reply()
        assert parse["error"]["code"] == -32700 and parse["id"] is None
        e.send_bytes(b"[1, 2, 3]")  # JSON, but not a JSON-RPC message
        assert (await e.reply())["error"]["code"] == -32600
        # Well-formed JSON-RPC whose params do not fit the LSP type: a request gets -32602, a
        # notification is dropped; neither costs a traceback in the log.
        bad = e.request("textDocument/inlineCompletion", {"textDocument": 5})
        assert (await e.response(bad))["error"]["code"] == -32602
        e.notify("textDocument/didOpen", {"textDocument": {"uri": 1}})
        status = await e.response(e.request("ingot/service/status"))
        assert status["result"]["pid"] == e.proc.pid
        e.request("shutdown")
        e.notify("exit")
        assert await e.exit_code() == 0
        log = await e.stderr_text()
        assert "Traceback" not in log and "cattrs" not in log, log
        malformed = [line for line in log.splitlines() if "malformed" in line]
        assert len(malformed) == 2, log
    finally:
        await e.close()


async def test_prompts_and_completions_never_reach_the_log(seeded_home: Path) -> None:
    secret = "zebra-octopus-lantern"
    async with engine(seeded_home, env={"INGOT_LOG_LEVEL": "DEBUG"}) as c:
        res = await c.request(
            "ingot/chat",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Repeat after me: {secret}"}],
                "maxTokens": 24,
                "temperature": 0,
                "partialResultToken": "p",
            },
        )
        await c.request(
            "ingot/complete", {"model": MODEL, "prompt": f"{secret} and", "maxTokens": 8}
        )
        await asyncio.sleep(0.5)
        log = c.stderr_text()
    assert "DEBUG" in log  # the log really was at DEBUG
    assert secret not in log and "Repeat after me" not in log
    text = res["text"].strip()
    if len(text) >= 12:  # long enough not to turn up in a log by chance
        assert text not in log and json.dumps(text)[1:-1] not in log
