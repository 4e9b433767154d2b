"""LSP base-protocol framing over stdio: Content-Length headers, -32700 for bodies that are not JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from typing import Any, BinaryIO

from server.jsonrpc.protocol import IngotProtocol

log = logging.getLogger("ingot.jsonrpc")

HEADER = re.compile(rb"^([A-Za-z-]+):\s*(.*?)\r?\n$")
MAX_BODY = 64 * 1024 * 1024


class StdoutWriter:
    """Writes whole frames; stdout is the wire, so nothing else may write to it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def close(self) -> None:
        pass


def _error_frame(code: int, message: str, msg_id: Any = None) -> bytes:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}
    ).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


async def read_messages(
    protocol: IngotProtocol, writer: StdoutWriter, stdin: BinaryIO | None = None
) -> None:
    """Read frames until end of input or `exit`; hand each message to the protocol."""
    stream = stdin or sys.stdin.buffer
    loop = asyncio.get_running_loop()

    def readline() -> bytes:
        return stream.readline()

    def readexactly(n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = stream.read(n)
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    while not protocol.exit_event.is_set():
        length: int | None = None
        while True:
            line = await loop.run_in_executor(None, readline)
            if not line:
                return  # end of input: the client is gone
            if line in (b"\r\n", b"\n"):
                if length is not None:
                    break
                continue
            m = HEADER.match(line)
            if m and m.group(1).lower() == b"content-length":
                try:
                    length = int(m.group(2))
                except ValueError:
                    length = None
        if length < 0 or length > MAX_BODY:
            writer.write(_error_frame(-32600, f"Message of {length} bytes is too large."))
            await loop.run_in_executor(None, readexactly, max(0, min(length, MAX_BODY)))
            continue
        body = await loop.run_in_executor(None, readexactly, length)
        if len(body) < length:
            return
        try:
            data = json.loads(body)
        except ValueError as e:
            writer.write(_error_frame(-32700, f"Parse error: the message is not valid JSON ({e})."))
            continue
        if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
            msg_id = data.get("id") if isinstance(data, dict) else None
            writer.write(
                _error_frame(-32600, "Invalid request: expected a JSON-RPC 2.0 object.", msg_id)
            )
            continue
        if "method" in data and not isinstance(data["method"], str):
            writer.write(
                _error_frame(-32600, "Invalid request: method must be a string.", data.get("id"))
            )
            continue
        try:
            message = protocol.structure_message(data)
            protocol.handle_message(message)
        except Exception as e:  # a bad message must never take the server down
            log.warning("could not handle a message: %s", type(e).__name__)
            if "id" in data and "method" in data:
                writer.write(
                    _error_frame(-32602, f"Invalid params for {data['method']}.", data["id"])
                )
