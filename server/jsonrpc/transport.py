"""LSP base-protocol framing over stdio: Content-Length headers, -32700 for bodies that are not JSON,
and an exit with FRAMING_EXIT_CODE when the input breaks the framing (never a silent, hung engine)."""

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

HEADER = re.compile(rb"^([A-Za-z0-9_.-]+):[ \t]*(.*?)[ \t]*\r?\n$")
DIGITS = re.compile(rb"[0-9]{1,20}")
# The next frame's header inside a body that failed to parse: the Content-Length was too large.
# A JSON body cannot hold a raw line break inside a string, so this does not match a valid one.
NEXT_HEADER = re.compile(rb"content-length:[ \t]*[0-9]+\r?\n", re.IGNORECASE)
MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_LINE = 4096
MAX_HEADER_LINES = 16
# Seconds a message body may take to arrive after its header. The client writes header and body
# together over a local pipe, so a body still short after this never comes (a Content-Length that
# is too large, with the client then waiting for the answer): without a deadline both sides wait
# forever. The variable only lets tests use a shorter one.
BODY_TIMEOUT_S = float(os.environ.get("INGOT_FRAME_BODY_TIMEOUT_S") or 10)
# Exit code after a framing error: the editor restarts an engine that exits non-zero (exit
# without shutdown is 1; this one says the input itself was broken).
FRAMING_EXIT_CODE = 2
CANCEL = "$/cancelRequest"


class FramingError(Exception):
    """The input no longer follows the LSP base protocol: where the next message starts is
    unknown, so nothing after it can be answered reliably."""

    def __init__(self, reason: str, code: int = -32700) -> None:
        super().__init__(reason)
        self.code = code


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

    async def readline(self, limit: int) -> bytes:
        """One line with its newline (without one at end of input); FramingError past `limit`
        bytes, so a header that never ends cannot fill memory."""
        while (i := self._buf.find(b"\n", 0, limit)) < 0:
            if len(self._buf) >= limit:
                raise FramingError(f"a header line is longer than {limit} bytes")
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


async def _read_frame(stream: _Input) -> bytes | None:
    """The next message body; None at a clean end of input (between messages)."""
    length: int | None = None
    lines = 0
    while True:
        line = await stream.readline(MAX_HEADER_LINE)
        if not line.endswith(b"\n"):
            if lines == 0 and not line.strip():
                return None  # end of input: the client is gone
            raise FramingError("the input ended inside a message header")
        if line in (b"\r\n", b"\n"):
            if lines == 0:
                continue  # a stray blank line between messages does no harm
            break
        lines += 1
        if lines > MAX_HEADER_LINES:
            raise FramingError(f"a message header has more than {MAX_HEADER_LINES} lines")
        m = HEADER.match(line)
        if m is None:
            raise FramingError(f"{_show(line)} is not a header line (Name: value)")
        if m.group(1).lower() == b"content-length":
            if not DIGITS.fullmatch(m.group(2)):
                raise FramingError(f"Content-Length {_show(m.group(2))} is not a number of bytes")
            length = int(m.group(2))
    if length is None:
        raise FramingError("a message header has no Content-Length")
    if length > MAX_BODY:
        raise FramingError(
            f"a message of {length} bytes is larger than the {MAX_BODY}-byte limit", -32600
        )
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            body = await stream.readexactly(length)
    except TimeoutError:
        raise FramingError(
            f"a message body of {length} bytes did not arrive within {BODY_TIMEOUT_S:g} s of its "
            "header (is its Content-Length too large?)"
        ) from None
    if len(body) < length:
        raise FramingError(f"the input ended {length - len(body)} bytes short of a message body")
    return body


def _show(raw: bytes) -> str:
    """A header fragment for a log line: short and printable."""
    return repr(raw[:60].decode("ascii", "replace").rstrip("\r\n"))


def _parse(body: bytes) -> Any:
    """The body as JSON; FramingError when it visibly holds the start of the next message."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except ValueError:
        if NEXT_HEADER.search(body):
            raise FramingError(
                "a message body holds the next message's header (its Content-Length was too large)"
            ) from None
        raise


def _refusal(protocol: IngotProtocol, data: Any) -> bytes | None:
    """The error frame for a message that is not a valid request (b"" for an invalid
    notification, which gets no answer), or None for a message to hand to the protocol."""
    msg_id = data.get("id") if isinstance(data, dict) else None
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, int | str)):
        # Echoing a nested id could itself fail to serialise; LSP ids are integers or strings.
        return _error_frame(-32600, "Invalid request: id must be an integer or string.")
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        return _error_frame(-32600, "Invalid request: expected a JSON-RPC 2.0 object.", msg_id)
    if "method" not in data:
        return None  # a response (to a request of the engine's, or to none: then ignored)
    method = data["method"]
    if not isinstance(method, str):
        return _error_frame(-32600, "Invalid request: method must be a string.", msg_id)
    if "id" not in data:
        # A notification is never answered, not even with an error.
        params = data.get("params")
        if params is not None and not isinstance(params, dict | list):
            log.warning("ignored a %s notification whose params are not structured", method[:100])
            return b""
        return None
    if msg_id is None:
        # A null id cannot be told apart from the id of an error about an unreadable message.
        return _error_frame(-32600, "Invalid request: id must be an integer or string, not null.")
    if (
        "params" in data
        and data["params"] is not None
        and not isinstance(data["params"], dict | list)
    ):
        return _error_frame(
            -32600, "Invalid request: params must be an object or an array.", msg_id
        )
    if protocol.is_notification(method):
        return _error_frame(
            -32600,
            f"Invalid request: {method[:100]} is a notification; send it without an id.",
            msg_id,
        )
    return None


def _give_up(protocol: IngotProtocol, writer: StdoutWriter, e: FramingError) -> None:
    """Answer the framing error, log it and end the engine with a non-zero code, so that the
    client restarts it instead of waiting for answers that will never come."""
    message = (
        f"Framing error: {e}. The engine cannot tell where the next message starts and "
        "exits; restart it."
    )
    writer.write(_error_frame(e.code, message))
    log.error("stdin framing error: %s; exiting with code %d", e, FRAMING_EXIT_CODE)
    protocol.exit_code = FRAMING_EXIT_CODE
    protocol.exit_event.set()


async def read_messages(
    protocol: IngotProtocol, writer: StdoutWriter, stdin: BinaryIO | None = None
) -> None:
    """Read frames until end of input or `exit`; hand each message to the protocol."""
    stream = _Input(stdin or sys.stdin.buffer)

    while not protocol.exit_event.is_set():
        try:
            body = await _read_frame(stream)
            if body is None:
                return
            data = _parse(body)
        except FramingError as e:
            _give_up(protocol, writer, e)
            return
        except ValueError as e:
            writer.write(_error_frame(-32700, f"Parse error: the message is not valid JSON ({e})."))
            continue
        if (refusal := _refusal(protocol, data)) is not None:
            if refusal:
                writer.write(refusal)
            continue
        msg_id = data.get("id")
        if (error := protocol.refusal(data.get("method"), data.get("params"))) is not None:
            protocol.refuse(msg_id if "method" in data else None, error)
            continue
        if data.get("method") == CANCEL and "id" not in data:
            # Handled here, on the raw id: pygls' structuring would turn "7" into 7 (and 7.0
            # equals 7), cancelling a request the client did not name.
            protocol.cancel_request(data.get("params"))
            continue
        try:
            message = protocol.structure_message(data)
            protocol.handle_message(message)
        except Exception as e:  # a bad message must never take the server down
            log.warning("could not handle a message: %s", type(e).__name__)
            if "id" in data and "method" in data:
                method = data["method"][:100]
                writer.write(_error_frame(-32602, f"Invalid params for {method}.", msg_id))
