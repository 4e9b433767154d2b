"""End-to-end: bytes that break the LSP framing or the JSON inside it, sent to the real engine over
its stdin. Each either gets an error response while the engine keeps answering, or makes the
engine exit non-zero at once with the reason on stderr — never a silent exit 0, never a hang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.jsonrpc.transport import FRAMING_EXIT_CODE
from tests.e2e.rpc_client import RawEngine

DEPTH = 100_000


async def _still_answers(e: RawEngine) -> None:
    status = await e.response(e.request("ingot/service/status"), timeout=10)
    assert status["result"]["pid"] == e.proc.pid


async def _exits_with_reason(e: RawEngine, reason: str) -> None:
    """A framing error: an error response with id null, then a prompt non-zero exit."""
    err = await e.reply(timeout=10)
    assert err["id"] is None and err["error"]["code"] in (-32700, -32600), err
    assert reason in err["error"]["message"], err
    assert await e.exit_code(timeout=10) == FRAMING_EXIT_CODE
    log = await e.stderr_text()
    assert "framing error" in log and reason in log, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEPTH + b"]" * DEPTH,
        b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        b'{"jsonrpc": "2.0", "id": ' + b"[" * DEPTH + b"]" * DEPTH + b', "method": "x"}',
    ],
    ids=["array", "object", "in-the-id"],
)
async def test_deep_nesting_is_a_parse_error_and_the_engine_keeps_going(
    seeded_home: Path, body: bytes
) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        e.send_bytes(body)
        err = await e.reply(timeout=10)
        assert err["id"] is None and err["error"]["code"] == -32700, err
        assert "nested too deeply" in err["error"]["message"]
        await _still_answers(e)
    finally:
        await e.close()


async def test_nesting_the_parser_accepts_gets_an_answer(seeded_home: Path) -> None:
    """Deep, but within what json.loads takes: the handlers must answer, not crash."""
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        deep: object = 1
        for _ in range(900):
            deep = [deep]
        e.send_bytes(
            json.dumps({"jsonrpc": "2.0", "id": 7, "method": "x", "params": deep}).encode()
        )
        assert "error" in await e.response(7, timeout=10)
        bad_id = {"jsonrpc": "2.0", "id": {"a": [1]}, "method": "ingot/service/status"}
        e.send_bytes(json.dumps(bad_id).encode())
        err = await e.reply(timeout=10)
        assert err["id"] is None and err["error"]["code"] == -32600, err
        await _still_answers(e)
    finally:
        await e.close()


def _frame(header: bytes, body: bytes) -> bytes:
    return header + b"\r\n\r\n" + body


BODY = b'{"jsonrpc":"2.0","id":1,"method":"x"}'
assert len(BODY) == 37


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_frame(b"Content-Length: 1000000000000", BODY), "larger than the"),
        (_frame(b"Content-Lenght: 37", BODY), "no Content-Length"),
        (_frame(b"Content-Length: thirty-seven", BODY), "is not a number of bytes"),
        (_frame(b"Content-Length: -37", BODY), "is not a number of bytes"),
        (_frame(b"Content-Length: 3_7", BODY), "is not a number of bytes"),
        (b"garbage that is no header\r\n\r\n" + BODY, "is not a header line"),
        (b"X-Filler: " + b"x" * 1_000_000, "header line is longer than"),
        (b"".join(b"X-%d: 1\r\n" % i for i in range(100)), "more than"),
    ],
    ids=[
        "over-the-limit",
        "misspelt",
        "not-a-number",
        "negative",
        "underscore",
        "not-a-header",
        "endless-line",
        "endless-header",
    ],
)
async def test_a_broken_frame_ends_the_engine_with_a_reason(
    seeded_home: Path, raw: bytes, reason: str
) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        await _still_answers(e)
        assert e.proc.stdin is not None
        e.proc.stdin.write(raw)
        await _exits_with_reason(e, reason)
    finally:
        await e.close()


async def test_a_short_body_does_not_leave_the_engine_out_of_step(seeded_home: Path) -> None:
    """The length says 100 but the body has 37 bytes; the next request follows at once. The reader
    sees the next header inside the body it read, so it cannot trust the stream any more."""
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        assert e.proc.stdin is not None
        e.proc.stdin.write(_frame(b"Content-Length: 100", BODY))
        e.request("ingot/service/status")
        await _exits_with_reason(e, "holds the next message's header")
    finally:
        await e.close()


async def test_a_long_body_does_not_leave_the_engine_out_of_step(seeded_home: Path) -> None:
    """The length says 30 but the body has 37 bytes: the first 30 are not JSON (an ordinary
    -32700), and the 7 left over run into the next header, which the reader refuses."""
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        assert e.proc.stdin is not None
        e.proc.stdin.write(_frame(b"Content-Length: 30", BODY))
        e.request("ingot/service/status")
        parse = await e.reply(timeout=10)
        assert parse["error"]["code"] == -32700 and parse["id"] is None
        await _exits_with_reason(e, "is not a header line")
    finally:
        await e.close()


async def test_a_short_body_and_a_waiting_client_do_not_hang(seeded_home: Path) -> None:
    """The length says 100 but the body has 37 bytes, and the client then waits for an answer with
    stdin open: the body deadline ends the wait."""
    e = await RawEngine.start(seeded_home, env={"INGOT_FRAME_BODY_TIMEOUT_S": "2"})
    try:
        await e.initialize()
        assert e.proc.stdin is not None
        e.proc.stdin.write(_frame(b"Content-Length: 100", BODY))
        await e.proc.stdin.drain()
        await _exits_with_reason(e, "did not arrive within 2 s")
    finally:
        await e.close()


async def test_input_ending_inside_a_body_is_not_a_clean_exit(seeded_home: Path) -> None:
    e = await RawEngine.start(seeded_home)
    try:
        await e.initialize()
        assert e.proc.stdin is not None
        e.proc.stdin.write(_frame(b"Content-Length: 100", BODY))
        await e.proc.stdin.drain()
        e.proc.stdin.close()
        await _exits_with_reason(e, "short of a message body")
    finally:
        await e.close()
