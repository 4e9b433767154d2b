"""Forwarding: a second engine on the same Ingot home sends its editor's requests to the engine or
service that owns the home (over its REST API), so models are never loaded twice. Requests carry
the API key (INGOT_API_KEY) when there is one; an owner that refuses connections raises
`OwnerUnreachable` so the engine can take the home over. The owner's live events (model state,
telemetry samples, request records) are read from its event stream, so that the editor behind a
forwarding engine sees the process that runs its models."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from protocol.errors import BY_KIND, error_for
from server.jsonrpc.protocol import RpcError

P = "/ingot/v1"


def _model(params: dict[str, Any]) -> str:
    return quote(str(params.get("model", "")), safe="")


# method -> (HTTP method, path builder, body builder); bodies are the JSON-RPC params themselves.
ROUTES: dict[str, tuple[str, Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], Any]]] = {
    "ingot/catalog/list": ("GET", lambda p: f"{P}/catalog", lambda p: None),
    "ingot/embed": ("POST", lambda p: f"{P}/embed", lambda p: p),
    "ingot/model/info": ("GET", lambda p: f"{P}/models/{_model(p)}", lambda p: None),
    "ingot/model/load": (
        "POST",
        lambda p: f"{P}/models/{_model(p)}/load",
        lambda p: {"ttl": p.get("ttl")},
    ),
    "ingot/model/unload": (
        "POST",
        lambda p: f"{P}/models/{_model(p)}/unload",
        lambda p: {"force": bool(p.get("force"))},
    ),
    "ingot/model/delete": ("DELETE", lambda p: f"{P}/models/{_model(p)}", lambda p: None),
    "ingot/model/register": ("POST", lambda p: f"{P}/models/register", lambda p: p),
    "ingot/cache/info": ("GET", lambda p: f"{P}/cache", lambda p: None),
    "ingot/cache/move": ("POST", lambda p: f"{P}/cache/move", lambda p: p),
    "ingot/cache/verify": ("POST", lambda p: f"{P}/cache/verify", lambda p: p),
    "ingot/hardware": ("GET", lambda p: f"{P}/hardware", lambda p: None),
    "ingot/telemetry/history": ("GET", lambda p: f"{P}/telemetry/history", lambda p: None),
}
STREAMED = {"ingot/chat": f"{P}/chat", "ingot/complete": f"{P}/complete"}
OPERATIONS = {"ingot/model/download": "download"}


def _error(status: int, body: Any) -> RpcError:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    extra = err.get("ingot") or {}
    kind = extra.get("kind") or (err.get("code") if err.get("code") in BY_KIND else "internal")
    message = str(err.get("message") or f"The owning engine answered HTTP {status}.")
    return RpcError(error_for(str(kind)).code, message, {**extra, "kind": kind, "status": status})


class OwnerUnreachable(RpcError):
    """The owning engine did not answer. `refused`: the connection was refused, so the request
    never reached it (and can be run elsewhere without doing it twice)."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(-32000, message, {"kind": "internal"})
        self.refused = refused


class Forwarder:
    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None), headers=self._headers
            )
        return self._session

    def handles(self, method: str) -> bool:
        return method in ROUTES or method in STREAMED or method in OPERATIONS

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        verb, path, body = ROUTES[method]
        query = None
        if method == "ingot/catalog/list":
            query = {
                k: str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in params.items()
                if v is not None
            }
        try:
            async with self.session.request(
                verb, self.url + path(params), json=body(params), params=query
            ) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    raise _error(r.status, data)
                return data
        except aiohttp.ClientError as e:
            raise self._unreachable(e) from e

    async def stream(
        self, method: str, params: dict[str, Any], on_event: Callable[[str, Any], None]
    ) -> Any:
        """POST and read SSE; `on_event` gets every non-final event; returns `done`'s data."""
        path = STREAMED.get(method) or f"{P}/models/{_model(params)}/{OPERATIONS[method]}"
        body = {k: v for k, v in params.items() if k not in ("partialResultToken", "workDoneToken")}
        try:
            async with self.session.post(self.url + path, json=body) as r:
                if r.status >= 400:
                    raise _error(r.status, await r.json(content_type=None))
                async for event, data in _sse(r.content):
                    if event == "done":
                        return data
                    if event == "error":
                        raise _error(500, data)
                    on_event(event, data)
        except aiohttp.ClientError as e:
            raise self._unreachable(e) from e
        raise RpcError(-32000, "The owning engine closed the stream without a result.")

    async def events(self) -> AsyncGenerator[tuple[str, Any]]:
        """The owner's live event stream (`/ingot/v1/events`): ("state" | "sample" | "request",
        camelCase data) until the owner closes it. Close the iterator when done with it
        (`contextlib.aclosing`), which ends the connection."""
        try:
            async with self.session.get(self.url + f"{P}/events") as r:
                if r.status >= 400:
                    raise _error(r.status, await r.json(content_type=None))
                async for item in _sse(r.content):
                    yield item
        except aiohttp.ClientError as e:
            raise self._unreachable(e) from e

    async def call_status(self) -> Any:
        try:
            async with self.session.get(self.url + f"{P}/status") as r:
                return await r.json(content_type=None)
        except aiohttp.ClientError as e:
            raise self._unreachable(e) from e

    def _unreachable(self, e: Exception) -> OwnerUnreachable:
        return OwnerUnreachable(
            f"The Ingot engine that owns this home ({self.url}) did not answer: {e}. "
            "Restart the editor window or run `ingot service status`.",
            refused=isinstance(e, aiohttp.ClientConnectorError),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _sse(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, Any]]:
    event, data = "message", list[str]()
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
