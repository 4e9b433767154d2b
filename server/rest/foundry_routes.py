"""Foundry Local compatibility routes, so tools and SDKs written for Foundry keep working.

Shapes follow Foundry's service and its Python SDK (which reads camelCase keys where the service
docs show PascalCase ones, so both spellings are sent where they disagree).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

from aiohttp import web

from engine.catalog.variant import ModelVariant
from engine.errors import IngotError, InvalidRequest
from engine.progress import CancelToken, Progress
from engine.service import EngineService
from engine.views import ModelView
from protocol import openai as oa
from server.rest.errors import bad_request
from server.rest.security import changes_state, read_json
from server.rest.settings import RestSettings, ServerInfo
from server.rest.sse import CLIENT_GONE

log = logging.getLogger("ingot.rest")

EP_DEVICE = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda"}


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def foundry_entry(view: ModelView) -> dict[str, Any]:
    v = view.variant
    gpu = v.device == "cuda"
    return {
        "name": v.id,
        "displayName": v.display_name,
        "modelType": "ONNX" if v.framework == "onnx" else "vLLM",
        "providerType": "Ingot",
        "uri": v.source.describe(),
        "version": str(v.version),
        "promptTemplate": v.prompt_template or {},
        "publisher": v.publisher,
        "task": v.task,
        "runtime": {
            "deviceType": "GPU" if gpu else "CPU",
            "executionProvider": "CUDAExecutionProvider" if gpu else "CPUExecutionProvider",
        },
        "fileSizeMb": v.size_bytes // (1024 * 1024),
        "modelSettings": {"parameters": []},
        "alias": v.alias,
        "supportsToolCalling": v.capabilities.tools,
        "license": v.license,
        "licenseDescription": v.license_url or "",
        "parentModelUri": "",
        "maxOutputTokens": v.max_output_tokens,
        "minFLVersion": "",
    }


class FoundryRoutes:
    def __init__(self, service: EngineService, settings: RestSettings, info: ServerInfo) -> None:
        self.service = service
        self.settings = settings
        self.info = info

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/openai/status", self.status)
        router.add_get("/openai/models", self.cached_models)
        router.add_get("/openai/loadedmodels", self.loaded_models)
        router.add_get("/openai/load/{model}", self.load)
        router.add_get("/openai/unload/{model}", self.unload)
        router.add_get("/openai/unloadall", self.unload_all)
        router.add_post("/openai/download", self.download)
        router.add_get("/foundry/list", self.catalog)
        router.add_post("/v1/chat/completions/tokenizer/encode/count", self.count_tokens)
        router.add_get("/status", self.current_status)
        router.add_get("/models/loaded", self.loaded_models)
        router.add_get("/models/load/{model}", self.load)
        router.add_get("/models/unload/{model}", self.unload)

    def _endpoints(self) -> list[str]:
        return [self.info.url] if self.info.url else []

    async def status(self, request: web.Request) -> web.Response:
        path = str(self.service.cache.root)
        return web.json_response(
            {
                "Endpoints": self._endpoints(),
                "ModelDirPath": path,
                "PipeName": "inference_agent",
                "endpoints": self._endpoints(),
                "modelDirPath": path,
                "pipeName": "inference_agent",
            }
        )

    async def current_status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "modelCachePath": str(self.service.cache.root),
                "endpoints": self._endpoints(),
                "pid": os.getpid(),
            }
        )

    async def cached_models(self, request: web.Request) -> web.Response:
        views = self.service.list_models(cached_only=True, include_all=True)
        return web.json_response([v.variant.id for v in views])

    async def loaded_models(self, request: web.Request) -> web.Response:
        return web.json_response([e.variant.id for e in self.service.loader.loaded()])

    async def catalog(self, request: web.Request) -> web.Response:
        return web.json_response([foundry_entry(v) for v in self.service.list_models()])

    def _variant(self, name: str, ep: str | None) -> ModelVariant:
        """The variant a Foundry name means; `ep` (cpu/cuda) picks the device among its variants."""
        v = self.service.resolve(name)
        if not ep:
            return v
        device = EP_DEVICE.get(ep.lower())
        if device is None:
            raise InvalidRequest(f"ep must be cpu or cuda (got '{ep[:20]}').", param="ep")
        if v.device == device:
            return v
        same = [x for x in self.service.catalog.all() if x.alias == v.alias and x.device == device]
        if not same:
            raise InvalidRequest(f"{v.alias} has no {device} variant.", param="ep")
        return self.service.resolve(same[0].id)

    @changes_state
    async def load(self, request: web.Request) -> web.Response:
        ttl_text = request.query.get("ttl")
        try:
            ttl = float(ttl_text) if ttl_text else None
        except ValueError:
            raise bad_request("ttl must be a number of seconds.", param="ttl") from None
        if ttl is not None and (ttl != ttl or abs(ttl) > 1e9):
            raise bad_request("ttl is out of range.", param="ttl")
        v = self._variant(request.match_info["model"], request.query.get("ep"))
        view = await self.service.load(v.id, ttl_s=ttl)
        return web.json_response({"model": view.variant.id, "loaded": view.loaded})

    @changes_state
    async def unload(self, request: web.Request) -> web.Response:
        v = self.service.resolve(request.match_info["model"])
        gone = await self.service.unload(v.id, force=_flag(request, "force"))
        return web.json_response({"model": v.id, "unloaded": gone})

    @changes_state
    async def unload_all(self, request: web.Request) -> web.Response:
        ids = [e.variant.id for e in self.service.loader.loaded()]
        for vid in ids:
            await self.service.unload(vid, force=True)
        return web.json_response({"unloaded": ids})

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await read_json(request, limit=self.settings.max_body_bytes)
        req = oa.TokenCountRequest.model_validate(body)
        if req.messages is None and req.prompt is None:
            raise bad_request("Send `messages` (or `prompt`) to count.", param="messages")
        messages = [m.model_dump(exclude_none=True) for m in req.messages or []] or None
        n = await self.service.count_tokens(req.model, messages=messages, prompt=req.prompt)
        return web.json_response({"tokenCount": n})

    async def download(self, request: web.Request) -> web.StreamResponse:
        """Foundry streams progress lines ("NN.N% ...") and ends with a JSON success object."""
        body = await read_json(request, limit=self.settings.max_body_bytes)
        model = body.get("model")
        name = (model.get("Name") or model.get("name")) if isinstance(model, dict) else model
        if not isinstance(name, str) or not name:
            raise bad_request("Send {'model': {'Name': <model id or alias>}}.", param="model")
        variant = self.service.resolve(name)
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        lines: asyncio.Queue[str] = asyncio.Queue()

        def on_progress(p: Progress) -> None:
            pct = f"{p.fraction * 100:.1f}% " if p.fraction is not None else ""
            lines.put_nowait(f"Total {pct}{p.message}".replace("\n", " "))

        cancel = CancelToken()
        task = asyncio.create_task(
            self.service.download(variant.id, progress=on_progress, cancel=cancel)
        )
        error: str | None = None
        try:
            while not task.done() or not lines.empty():
                getter = asyncio.ensure_future(lines.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await response.write((getter.result() + "\n").encode())
                else:
                    getter.cancel()
            try:
                task.result()
            except IngotError as e:
                error = str(e)
            except Exception as e:
                log.error("download of %s failed", variant.id, exc_info=e)
                error = f"Internal error ({type(e).__name__}); the server log has the details."
            result = {"success": error is None, "errorMessage": error}
            final = {**result, "Success": error is None, "ErrorMessage": error}
            await response.write((json.dumps(final) + "\n").encode())
            await response.write_eof()
        except (asyncio.CancelledError, *CLIENT_GONE) as e:
            # The download stops (it resumes from its partial files next time).
            cancel.cancel("the client disconnected")
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if isinstance(e, asyncio.CancelledError):
                raise
        return response
