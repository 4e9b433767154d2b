"""LSP base-protocol framing over stdio: Content-Length headers, -32700 for bodies that are not JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import os
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


class _Input:
    """Bytes from stdin, read by a daemon thread with os.read: a blocked read must not keep the
    process alive once the engine has decided to exit (parent gone, `exit`), which a read in the
    default executor would (asyncio.run joins its threads), and os.read on the fd takes no
    buffered-reader lock that interpreter shutdown would wait for."""

    CHUNK = 1 << 16

    def __init__(self, stream: BinaryIO) -> None:
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._buf = bytearray()
        self._eof = False
        try:
            fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        self._stream, self._fd = stream, fd
        threading.Thread(target=self._pump, name="ingot-stdin", daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                if self._fd is not None:
                    chunk = os.read(self._fd, self.CHUNK)
                else:
                    chunk = self._stream.read1(self.CHUNK)  # type: ignore[attr-defined]
            except OSError:
                chunk = b""
            try:
                self._loop.call_soon_threadsafe(self._chunks.put_nowait, chunk)
            except RuntimeError:
                return  # the loop is closed: the engine is exiting
            if not chunk:
                return

    async def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = await self._chunks.get()
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def readline(self) -> bytes:
        while (i := self._buf.find(b"\n")) < 0:
            if not await self._fill():
                line, self._buf = bytes(self._buf), bytearray()
                return line
        line = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        return line

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                break
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


async def read_messages(
    protocol: IngotProtocol, writer: StdoutWriter, stdin: BinaryIO | None = None
) -> None:
    """Read frames until end of input or `exit`; hand each message to the protocol."""
    stream = _Input(stdin or sys.stdin.buffer)

    while not protocol.exit_event.is_set():
        length: int | None = None
        while True:
            line = await stream.readline()
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
            await stream.readexactly(max(0, min(length, MAX_BODY)))
            continue
        body = await stream.readexactly(length)
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
