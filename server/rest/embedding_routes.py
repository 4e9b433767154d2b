"""Embedding routes: OpenAI's `POST /v1/embeddings`, and `POST /ingot/v1/embed` (the params and
result of `ingot/embed`, so a forwarding engine can relay it)."""

from __future__ import annotations

from aiohttp import web

from engine.service import EngineService
from protocol.jsonrpc.embeddings import EmbedParams
from protocol.openai_embeddings import EmbeddingRequest
from server import embeddings
from server.rest.security import read_json
from server.rest.settings import RestSettings


class EmbeddingRoutes:
    def __init__(self, service: EngineService, settings: RestSettings) -> None:
        self.service = service
        self.settings = settings

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/embeddings", self.create)
        router.add_post("/ingot/v1/embed", self.embed)

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request, limit=self.settings.max_body_bytes)
        req = EmbeddingRequest.model_validate(body)
        ereq = embeddings.from_openai(req)
        variant = self.service.resolve(req.model)
        embeddings.check_dimensions(variant, req.dimensions)
        result = await self.service.embed(ereq)
        embeddings.check_dimensions(variant, req.dimensions, result.dimensions)
        return web.json_response(
            embeddings.openai_response(result, req.encoding_format),
            headers={"X-Request-Id": result.request_id},
        )

    async def embed(self, request: web.Request) -> web.Response:
        body = await read_json(request, limit=self.settings.max_body_bytes)
        p = EmbedParams.model_validate(body)
        result = await self.service.embed(embeddings.from_rpc(p))
        answer = embeddings.rpc_result(result, p.encoding_format)
        return web.json_response(answer.model_dump(mode="json", by_alias=True))
