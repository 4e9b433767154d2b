"""Routes forwardable methods to the owning engine when this engine is in forwarding mode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lsprotocol import types

from engine.progress import Progress
from protocol.registry import method as spec_of
from server.jsonrpc.handlers.progress import WorkDone
from server.jsonrpc.server import IngotServer, parse

Handler = Callable[[Any], Awaitable[Any]]


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
        if name in ("ingot/chat", "ingot/complete"):
            token = p.get("partialResultToken")

            def on_delta(event: str, data: Any) -> None:
                if event == "delta" and token is not None:
                    server.protocol.notify(
                        types.PROGRESS, types.ProgressParams(token=token, value=data)
                    )

            return await fwd.stream(name, p, on_delta)
        if name == "ingot/model/download":
            wd = await WorkDone.start(server, p.get("workDoneToken"), f"Downloading {p['model']}")

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

            try:
                return await fwd.stream(name, p, on_progress)
            finally:
                wd.end("Done")
        return await fwd.call(name, p)

    return handler


def install(server: IngotServer) -> None:
    """Wrap the registered handlers of every method the forwarder can route."""
    from server.jsonrpc.forwarding import OPERATIONS, ROUTES, STREAMED

    features = server.protocol.fm.features
    for name in (*ROUTES, *STREAMED, *OPERATIONS):
        if name in features:
            features[name] = _forwarding(server, name, features[name])
