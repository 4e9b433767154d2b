"""Routes forwardable methods to the owning engine when this engine is in forwarding mode, and
takes the home over when that owner has gone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from engine.progress import Progress
from protocol.registry import method as spec_of
from server.jsonrpc.forwarding import Forwarder, OwnerUnreachable
from server.jsonrpc.handlers.progress import (
    DOWNLOAD_FAILED,
    DOWNLOAD_STOPPED,
    WorkDone,
    reporting,
)
from server.jsonrpc.server import IngotServer, parse

Handler = Callable[[Any], Awaitable[Any]]
HANDED_OVER = "The engine that owned this Ingot home is gone; trying again here."


async def _stream_generation(
    server: IngotServer, fwd: Forwarder, name: str, p: dict[str, Any]
) -> Any:
    """Forward ingot/chat or ingot/complete, relaying deltas as partial results; a cancel answers
    -32800 with the tokens forwarded so far, as a local generation does."""
    token = p.get("partialResultToken")
    msg_id = server.protocol.msg_id
    tokens = 0

    def on_delta(event: str, data: Any) -> None:
        nonlocal tokens
        if event != "delta":
            return
        if isinstance(data, dict) and isinstance(data.get("tokens"), int):
            tokens = data["tokens"]
        if token is not None:
            server.send_progress(token, data)

    try:
        return await fwd.stream(name, p, on_delta)
    except asyncio.CancelledError:
        if msg_id is not None:
            server.protocol.cancel_data[msg_id] = {"kind": "cancelled", "tokens": tokens}
        raise


async def _download(server: IngotServer, fwd: Forwarder, name: str, p: dict[str, Any]) -> Any:
    """Forward ingot/model/download, relaying the owner's progress as this request's own."""

    def relay(wd: WorkDone) -> Awaitable[Any]:
        def on_progress(event: str, data: Any) -> None:
            if event == "progress":
                wd.report(
                    Progress(
                        stage=str(data.get("stage", "download")),
                        message=str(data.get("message", "")),
                        fraction=data.get("fraction"),
                        bytes_done=data.get("bytesDone"),
                        bytes_total=data.get("bytesTotal"),
                    )
                )

        return fwd.stream(name, p, on_progress)

    return await reporting(
        server,
        p.get("workDoneToken"),
        f"Downloading {p['model']}",
        relay,
        done="Downloaded",
        stopped=DOWNLOAD_STOPPED,
        # Refused: the owner never saw it; _forwarding takes the home over and runs it again.
        failed=lambda e: (
            HANDED_OVER if isinstance(e, OwnerUnreachable) and e.refused else DOWNLOAD_FAILED
        ),
    )


def _forwarding(server: IngotServer, name: str, local: Handler) -> Handler:
    async def handler(params: Any) -> Any:
        fwd = server.forwarder
        if fwd is None:
            return await local(params)
        spec = spec_of(name)
        # Validate here, so bad params are -32602 whichever engine would run them.
        p = (
            parse(spec.params, params).model_dump(by_alias=True, exclude_none=True)
            if spec.params
            else {}
        )
        try:
            if name in ("ingot/chat", "ingot/complete"):
                return await _stream_generation(server, fwd, name, p)
            if name == "ingot/model/download":
                return await _download(server, fwd, name, p)
            return await fwd.call(name, p)
        except OwnerUnreachable as e:
            # Refused: the request never reached the owner, so it can run here (or at the home's
            # new owner) without running twice.
            if not e.refused or not await server.take_over():
                raise
        return await handler(params)

    return handler


def install(server: IngotServer) -> None:
    """Wrap the registered handlers of every method the forwarder can route."""
    from server.jsonrpc.forwarding import OPERATIONS, ROUTES, STREAMED

    features = server.protocol.fm.features
    for name in (*ROUTES, *STREAMED, *OPERATIONS):
        if name in features:
            features[name] = _forwarding(server, name, features[name])
