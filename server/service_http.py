"""What every client of an Ingot service's REST API shares (the `ingot` CLI and a forwarding
engine): the headers that authenticate it, read timeouts, a server-sent-events reader without
aiohttp's line limit, and the owner check made before the home secret is sent."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from server.secret import HEADER, HomeSecret
from server.state import ServiceState, owner_answers_as

CONNECT_TIMEOUT_S = 10.0
# Status, catalog, model info, hardware: the service answers them promptly even while it
# generates, so a service that says nothing for this long is hung.
QUICK_READ_TIMEOUT_S = 60.0
# Longest silence on a long operation: downloads report progress ten times a second, but loading a
# big model, a compile step or a queued generation's first token can take minutes without a byte.
# A time between reads, not a total: a stream that keeps sending never times out.
IDLE_READ_TIMEOUT_S = 600.0
IDLE_TIMEOUT_ENV = "INGOT_CLIENT_IDLE_TIMEOUT_S"
# One event's data (a generation's `done` carries the whole text): far above any real one, well
# below what would exhaust memory.
MAX_EVENT_BYTES = 64 * 1024 * 1024


class EventTooLarge(ValueError):
    """A server-sent event bigger than MAX_EVENT_BYTES: the stream is not what Ingot sends."""


def auth_headers(secret: HomeSecret | None, api_key: str | None = None) -> dict[str, str]:
    """The home secret (management and native routes) and the API key (every route, when the
    service has one), each in its own header so that both can be sent."""
    headers: dict[str, str] = {}
    if secret is not None:
        headers[HEADER] = secret.value
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def idle_read_timeout_s() -> float:
    try:
        value = float(os.environ.get(IDLE_TIMEOUT_ENV, "") or IDLE_READ_TIMEOUT_S)
    except ValueError:
        return IDLE_READ_TIMEOUT_S
    return value if value > 0 else IDLE_READ_TIMEOUT_S


def quick_timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        connect=CONNECT_TIMEOUT_S,
        sock_connect=CONNECT_TIMEOUT_S,
        sock_read=QUICK_READ_TIMEOUT_S,
    )


def idle_timeout() -> aiohttp.ClientTimeout:
    """No total (downloads and streams legitimately take minutes or hours), but an idle limit
    between reads, so a service that hangs mid-answer does not hang its client forever."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=CONNECT_TIMEOUT_S,
        sock_connect=CONNECT_TIMEOUT_S,
        sock_read=idle_read_timeout_s(),
    )


def stalled(e: BaseException) -> bool:
    """`e` is a read timeout: connected, then nothing came for the idle limit."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return False  # could not connect: an unreachable service, not a silent one
    return isinstance(e, aiohttp.ServerTimeoutError | TimeoutError)


async def read_events(
    content: aiohttp.StreamReader, max_event_bytes: int = MAX_EVENT_BYTES
) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream; `event` is "message" when unnamed. Reads
    chunks and splits lines itself: aiohttp's line reader refuses lines over its buffer limit with
    an exception no caller expects, and a generation's final event can be that long."""
    event, data, size = "message", list[str](), 0
    buf = bytearray()

    def line_of(raw: bytes) -> str:
        return raw.decode("utf-8", "replace").rstrip("\r")

    async for chunk in content.iter_any():
        buf += chunk
        start = 0
        lines: list[str] = []
        while (nl := buf.find(b"\n", start)) >= 0:
            lines.append(line_of(bytes(buf[start:nl])))
            start = nl + 1
        del buf[:start]
        if len(buf) > max_event_bytes:
            raise EventTooLarge(f"An event of the stream is larger than {max_event_bytes} bytes.")
        for line in lines:
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data, size = "message", [], 0
            elif line.startswith(":"):
                continue  # keep-alive comment
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                part = line[5:].removeprefix(" ")
                size += len(part)
                if size > max_event_bytes:
                    raise EventTooLarge(
                        f"An event of the stream is larger than {max_event_bytes} bytes."
                    )
                data.append(part)
    if buf:
        line = line_of(bytes(buf))
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)


async def check_owner(
    session: aiohttp.ClientSession, st: ServiceState, secret: HomeSecret | None
) -> bool | None:
    """Ask `st.url`'s /health who answers there, without sending the secret. True: the owner
    `st` describes (same pid and process start time, and it proved it knows `secret`); False:
    nothing listens there, or something else does; None: it did not answer in time."""
    challenge = secrets.token_hex(16)
    try:
        async with session.get(
            st.url.rstrip("/") + "/health",
            params={"challenge": challenge},
            timeout=aiohttp.ClientTimeout(total=10, connect=CONNECT_TIMEOUT_S),
        ) as r:
            body: Any = await r.json(content_type=None)
    except (aiohttp.ServerTimeoutError, TimeoutError):
        return None
    except (aiohttp.ClientError, ValueError):
        return False
    return owner_answers_as(st, body, challenge, secret)
