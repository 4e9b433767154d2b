"""IngotAppRunner: aiohttp's AppRunner with the connection rules a local engine needs. Requests
aiohttp refuses before any route runs (malformed HTTP, no Host header, an oversized header line)
are answered in the OpenAI error shape rather than aiohttp's plain text; connections over the cap
get a 503 and are closed; headers must arrive, and idle keep-alive connections close, within the
read timeout (aiohttp's keep-alive timer also runs while a request's head is being read)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from server.rest.errors import ApiError, internal_error

log = logging.getLogger("ingot.rest")


def _too_many(limit: int) -> bytes:
    body = ApiError(
        503,
        f"The server has {limit} connections open, its limit. Close idle connections or retry.",
        type="server_error",
        code="too_many_connections",
    ).body()
    data = json.dumps(body).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class _IngotHandler(RequestHandler):
    """aiohttp's connection handler with Ingot's rules (no new state: see _IngotServer)."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        limit = getattr(self._manager, "max_connections", 0)
        if limit and self._manager is not None and len(self._manager.connections) > limit:
            log.warning("refused a connection: %d are open, the limit", limit)
            assert isinstance(transport, asyncio.Transport)
            transport.write(_too_many(limit))
            self.force_close()
            transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # aiohttp's own: logs the traceback, refuses when a response was already started.
            super().handle_error(request, status, exc, message)
            error = internal_error(exc or RuntimeError("unknown"))
            if status == 504:
                error = ApiError(504, "The request timed out.", type="server_error", code="timeout")
        else:
            detail = (message or "").strip().rstrip(".") or "it could not be parsed"
            # The client's mistake: one line in the log, not aiohttp's traceback.
            log.info("refused a malformed HTTP request: %s", detail.splitlines()[0][:200])
            if request.writer.output_size > 0:
                raise ConnectionError("a response was already started; cannot answer the error")
            error = ApiError(
                status,
                f"The HTTP request is malformed: {detail[:300]}. Send a well-formed HTTP/1.1 "
                "request (with a Host header); HTTP clients and SDKs do this for you.",
                code="bad_http_request",
            )
        response = error.response()
        response.force_close()
        return response


class _IngotServer(web.Server):
    max_connections = 0

    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        # aiohttp builds the handler itself; the subclass adds no state, so switching the class
        # of the new instance is safe and keeps every keyword aiohttp passes.
        handler.__class__ = _IngotHandler
        return handler


class IngotAppRunner(web.AppRunner):
    def __init__(
        self, app: web.Application, *, max_connections: int, read_timeout_s: float, **kw: Any
    ) -> None:
        # aiohttp's default keep-alive is an hour; its timer also bounds reading a request head.
        # After an early answer (408, 413) aiohttp drains the unread body ("lingering") for up
        # to 10 s by default; a second is plenty on loopback, and a stalled client is let go.
        super().__init__(app, keepalive_timeout=read_timeout_s, lingering_time=1.0, **kw)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server: Any = await super()._make_server()
        server.__class__ = _IngotServer
        server.max_connections = self._max_connections
        return server  # type: ignore[no-any-return]
