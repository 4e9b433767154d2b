"""JSON-RPC method handlers, one module per area; `register_all` wires them to the server."""

from __future__ import annotations

from server.jsonrpc.handlers import (
    console,
    embeddings,
    forward,
    generation,
    lifecycle,
    models,
    remotes,
    telemetry,
)
from server.jsonrpc.server import IngotServer


def register_all(server: IngotServer) -> None:
    for module in (lifecycle, models, generation, console, telemetry, embeddings, remotes):
        module.register(server)
    forward.install(server)
