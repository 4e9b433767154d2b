"""Forwarding: a second engine on the same Ingot home sends its editor's requests to the engine or
service that owns the home (over its REST API), so models are never loaded twice. Requests carry
the home's secret (read from the home, sent only once the owner's /health proved it is the owner
the state file names) and the API key (INGOT_API_KEY) when there is one; an owner that refuses
connections, or that is not who answers at its URL any more, raises `OwnerUnreachable` so the
engine can take the home over. Reads time out when the owner goes silent, rather than hang the
editor. The owner's live events (model state, telemetry samples, request records) are read from
its event stream, so that the editor behind a forwarding engine sees the process that runs its
models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from protocol.errors import BY_KIND, error_for
from server.jsonrpc.protocol import RpcError
from server.secret import SecretFileError, read_secret
from server.service_http import (
    auth_headers,
    check_owner,
    idle_timeout,
    quick_timeout,
    read_events,
    stalled,
)
from server.state import ServiceState, live_state

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
    "ingot/remote/attach": ("POST", lambda p: f"{P}/remotes", lambda p: p),
    "ingot/remote/list": ("GET", lambda p: f"{P}/remotes", lambda p: None),
    "ingot/remote/detach": (
        "DELETE",
        lambda p: f"{P}/remotes/{quote(str(p.get('remote', '')), safe='')}",
        lambda p: None,
    ),
}
STREAMED = {"ingot/chat": f"{P}/chat", "ingot/complete": f"{P}/complete"}
OPERATIONS = {"ingot/model/download": "download"}
# Methods the owner answers at once whatever it is doing (a tighter read timeout).
QUICK = {
    "ingot/catalog/list",
    "ingot/model/info",
    "ingot/cache/info",
    "ingot/hardware",
    "ingot/telemetry/history",
    "ingot/remote/list",
}


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
    """`owner`: the state the home's owner wrote (checked against its /health before the secret
    is sent); `home`: where the secret is read from. Without them (tests, older callers) requests
    carry only the API key."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        owner: ServiceState | None = None,
        home: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.owner = owner
        self.home = home
        self._api_key = api_key
        self._headers: dict[str, str] | None = None
        self._checking = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # No default headers: the /health check must go out without the secret.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=idle_timeout())
        return self._session

    async def headers(self) -> dict[str, str]:
        """The auth headers, once the owner has been checked (again after any failed request)."""
        if self._headers is not None:
            return self._headers
        async with self._checking:
            if self._headers is None:
                self._headers = await self._checked_headers()
            return self._headers

    async def _checked_headers(self) -> dict[str, str]:
        if self.home is None or self.owner is None:
            return auth_headers(None, self._api_key)
        try:
            secret = read_secret(self.home)
        except SecretFileError as e:
            raise RpcError(
                error_for("unauthorized").code,
                f"{e.message} {e.hint}",
                {"kind": "unauthorized", "hint": e.hint},
            ) from None
        verdict = await check_owner(self.session, self.owner, secret)
        if verdict is False:
            # The home may have a new owner at the same address (a restarted service): follow it.
            fresh = live_state(self.home)
            if fresh is not None and fresh != self.owner and fresh.url.rstrip("/") == self.url:
                self.owner = fresh
                verdict = await check_owner(self.session, fresh, secret)
        if verdict is False:
            # Whatever answers there (if anything) is not the owner the state file names: it
            # never gets the secret, and the request never reached the owner, so the engine may
            # take the home over (`refused`).
            raise OwnerUnreachable(
                f"The Ingot engine that owned this home ({self.url}, pid {self.owner.pid}) is not "
                "the one answering there any more.",
                refused=True,
            )
        if verdict is None:
            raise OwnerUnreachable(
                f"The Ingot engine that owns this home ({self.url}) did not answer its health "
                "check. Restart the editor window or run `ingot service status`.",
                refused=False,
            )
        return auth_headers(secret, self._api_key)

    def _failed(self) -> None:
        # After a failure, check the owner again before the next request carries the secret.
        self._headers = None

    def _error(self, status: int, body: Any) -> RpcError:
        if status == 401:
            # A new owner with a new secret at the same URL: read the secret and check it again.
            self._failed()
        return _error(status, body)

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
        timeout = quick_timeout() if method in QUICK else idle_timeout()
        headers = await self.headers()
        try:
            async with self.session.request(
                verb,
                self.url + path(params),
                json=body(params),
                params=query,
                headers=headers,
                timeout=timeout,
            ) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    raise self._error(r.status, data)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise self._unreachable(e) from e

    async def stream(
        self, method: str, params: dict[str, Any], on_event: Callable[[str, Any], None]
    ) -> Any:
        """POST and read SSE; `on_event` gets every non-final event; returns `done`'s data."""
        path = STREAMED.get(method) or f"{P}/models/{_model(params)}/{OPERATIONS[method]}"
        body = {k: v for k, v in params.items() if k not in ("partialResultToken", "workDoneToken")}
        headers = await self.headers()
        try:
            async with self.session.post(self.url + path, json=body, headers=headers) as r:
                if r.status >= 400:
                    raise self._error(r.status, await r.json(content_type=None))
                async for event, data in _sse(r.content):
                    if event == "done":
                        return data
                    if event == "error":
                        raise _error(500, data)
                    on_event(event, data)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise self._unreachable(e) from e
        raise RpcError(-32000, "The owning engine closed the stream without a result.")

    async def events(self) -> AsyncGenerator[tuple[str, Any]]:
        """The owner's live event stream (`/ingot/v1/events`): ("state" | "sample" | "request",
        camelCase data) until the owner closes it. Close the iterator when done with it
        (`contextlib.aclosing`), which ends the connection."""
        headers = await self.headers()
        try:
            # The owner sends a keep-alive comment every 15 s: a minute of silence means it hung.
            async with self.session.get(
                self.url + f"{P}/events", headers=headers, timeout=quick_timeout()
            ) as r:
                if r.status >= 400:
                    raise self._error(r.status, await r.json(content_type=None))
                async for item in _sse(r.content):
                    yield item
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise self._unreachable(e) from e

    async def call_status(self) -> Any:
        headers = await self.headers()
        try:
            async with self.session.get(
                self.url + f"{P}/status", headers=headers, timeout=quick_timeout()
            ) as r:
                return await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise self._unreachable(e) from e

    def _unreachable(self, e: Exception) -> OwnerUnreachable:
        self._failed()
        if stalled(e):
            why = "it sent nothing within the read timeout"
        elif isinstance(e, ValueError):
            why = f"it sent a stream Ingot cannot read ({str(e)[:200]})"
        else:
            why = str(e)
        return OwnerUnreachable(
            f"The Ingot engine that owns this home ({self.url}) did not answer: {why}. "
            "Restart the editor window or run `ingot service status`.",
            refused=isinstance(e, aiohttp.ClientConnectorError),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _sse(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, Any]]:
    async for event, data in read_events(content):
        yield event, json.loads(data)
