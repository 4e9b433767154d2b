"""Handler for `ingot/embed`: texts in, vectors out, through the engine's embedding pipeline."""

from __future__ import annotations

from typing import Any

from protocol.jsonrpc.embeddings import EmbedParams
from server import embeddings
from server.jsonrpc.server import IngotServer, dump, parse


def register(server: IngotServer) -> None:
    @server.feature("ingot/embed")
    async def embed(params: Any) -> Any:
        p = parse(EmbedParams, params)
        result = await server.service.embed(embeddings.from_rpc(p))
        return dump(embeddings.rpc_result(result, p.encoding_format))
