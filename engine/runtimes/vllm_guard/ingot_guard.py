"""RequireKey: ASGI middleware for the vLLM server the engine starts (`--middleware
ingot_guard.RequireKey`), imported by vLLM's interpreter, so standard library only.

vLLM's own key check (VLLM_API_KEY) guards only /v1, /v2, /inference and /cohere; /invocations
(SageMaker) generates too, and /tokenize, /pooling, /metrics answer anyone. The server listens on
loopback, but every local process could use it there, past the key and the limits Ingot's own
port enforces. This asks every request but /health (the engine's readiness probe, which says
nothing) for the same key, read from VLLM_API_KEY: the engine puts a fresh one in the server's
environment, never on its command line, where any local user could read it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})
KEY_ENV = "VLLM_API_KEY"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class RequireKey:
    def __init__(self, app: App) -> None:
        self.app = app
        key = os.environ.get(KEY_ENV)
        if not key:
            # Started without a key, this server must not start open: refuse to build the app.
            raise RuntimeError(f"{KEY_ENV} is not set; Ingot's vLLM server needs a key.")
        self._key = _digest(key)

    def _allowed(self, scope: Scope) -> bool:
        if scope.get("method") == "OPTIONS" or scope["path"] in OPEN_PATHS:
            return True
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    _digest(token.strip()), self._key
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            body = json.dumps(
                {"error": {"message": "Unauthorized", "type": "authentication_error"}}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
