"""Ingot's own management API under /ingot/v1: the JSON-RPC methods' semantics over HTTP, with the
same camelCase wire models, server-sent events for long operations and a live event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from engine.events import ModelStateEvent
from engine.progress import CancelToken, Progress, ProgressCallback
from engine.service import EngineService
from engine.telemetry import RequestRecord, SystemSample
from engine.views import ModelView
from protocol.jsonrpc import models as m
from protocol.jsonrpc import service as s
from protocol.jsonrpc.remotes import RemoteAttachParams, RemoteDetachParams
from server import remotes, translate
from server.rest.errors import ApiError, bad_request, to_api_error
from server.rest.security import SECRET_CALLER, read_json
from server.rest.settings import RestSettings, ServerInfo
from server.rest.sse import CLIENT_GONE, SseStream, pump

log = logging.getLogger("ingot.rest")

PREFIX = "/ingot/v1"
KEEPALIVE_S = 15.0
Operation = Callable[[ProgressCallback, CancelToken], Awaitable[Any]]


def wire(model: BaseModel) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True))


def _dumps(model: BaseModel) -> str:
    return model.model_dump_json(by_alias=True)


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name, "")
    if raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise bad_request(f"{name} must be true or false.", param=name)


def _local_path(value: str, param: str) -> str:
    """A path from the body, refused with a 400 before it reaches the file system when no file
    could have that name (the OS would raise ValueError deep inside the operation)."""
    if "\x00" in value:
        raise bad_request(
            f"{param} contains a NUL character; give the path of a file.", param=param
        )
    return value


def progress_data(p: Progress) -> dict[str, Any]:
    return {
        "stage": p.stage,
        "message": p.message,
        "fraction": p.fraction,
        "bytesDone": p.bytes_done,
        "bytesTotal": p.bytes_total,
        "file": p.file,
    }


class IngotRoutes:
    def __init__(self, service: EngineService, settings: RestSettings, info: ServerInfo) -> None:
        self.service = service
        self.settings = settings
        self.info = info
        self._subscribers: set[asyncio.Queue[tuple[str, str] | None]] = set()

    def add_to(self, router: web.UrlDispatcher) -> None:
        p = PREFIX
        router.add_get(f"{p}/catalog", self.catalog)
        router.add_post(f"{p}/models/register", self.register)
        router.add_post(f"{p}/models/compile", self.compile)
        router.add_post(f"{p}/models/import", self.import_gguf)
        router.add_post(f"{p}/models/{{model}}/verify", self.verify)
        router.add_get(f"{p}/models/{{model}}", self.model)
        router.add_delete(f"{p}/models/{{model}}", self.delete)
        router.add_post(f"{p}/models/{{model}}/download", self.download)
        router.add_post(f"{p}/models/{{model}}/load", self.load)
        router.add_post(f"{p}/models/{{model}}/unload", self.unload)
        router.add_get(f"{p}/cache", self.cache)
        router.add_post(f"{p}/cache/move", self.cache_move)
        router.add_post(f"{p}/cache/verify", self.cache_verify)
        router.add_get(f"{p}/hardware", self.hardware)
        router.add_get(f"{p}/status", self.status)
        router.add_get(f"{p}/telemetry/history", self.history)
        router.add_get(f"{p}/events", self.events)
        router.add_get(f"{p}/remotes", self.remotes)
        router.add_post(f"{p}/remotes", self.attach_remote)
        router.add_delete(f"{p}/remotes/{{remote}}", self.detach_remote)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        return await read_json(request, limit=self.settings.max_body_bytes, allow_empty=True)

    # -- catalog and models ----------------------------------------------------------------------
    async def catalog(self, request: web.Request) -> web.Response:
        q: dict[str, Any] = {k: v for k, v in request.query.items() if v != ""}
        for flag in ("cachedOnly", "fitsOnly", "includeAll"):
            if flag in q:
                q[flag] = _bool(request, flag)
        p = m.CatalogListParams.model_validate(q)
        views = self.service.list_models(
            device=p.device,
            task=p.task,
            runtime=p.runtime,
            cached_only=p.cached_only,
            fits_only=p.fits_only,
            include_all=p.include_all,
        )
        return wire(m.CatalogListResult(models=[translate.model_info(v) for v in views]))

    async def model(self, request: web.Request) -> web.Response:
        return wire(translate.model_info(self.service.model_info(request.match_info["model"])))

    async def load(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        p = m.ModelLoadParams.model_validate({**body, "model": request.match_info["model"]})
        return wire(translate.model_info(await self.service.load(p.model, ttl_s=p.ttl)))

    async def unload(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        p = m.ModelUnloadParams.model_validate({**body, "model": request.match_info["model"]})
        return wire(m.ModelUnloadResult(unloaded=await self.service.unload(p.model, force=p.force)))

    async def delete(self, request: web.Request) -> web.Response:
        deleted = await self.service.delete(request.match_info["model"])
        return wire(m.ModelDeleteResult(deleted=deleted))

    async def register(self, request: web.Request) -> web.Response:
        p = m.ModelRegisterParams.model_validate(await read_json(request, limit=self._limit))
        view = await self.service.register(
            Path(p.path).expanduser(), runtime=p.runtime, name=p.name, alias=p.alias
        )
        return wire(translate.model_info(view))

    @property
    def _limit(self) -> int:
        return self.settings.max_body_bytes

    async def download(self, request: web.Request) -> web.StreamResponse:
        variant = self.service.resolve(request.match_info["model"])  # 404 before the stream

        def run(progress: ProgressCallback, cancel: CancelToken) -> Awaitable[ModelView]:
            return self.service.download(variant.id, progress=progress, cancel=cancel)

        return await self._operation(request, run, variant.id)

    async def compile(self, request: web.Request) -> web.StreamResponse:
        p = m.ModelCompileParams.model_validate(await read_json(request, limit=self._limit))
        source = _local_path(p.source, "source")  # a 400 before the stream starts

        def run(progress: ProgressCallback, cancel: CancelToken) -> Awaitable[ModelView]:
            return self.service.compile(
                source,
                precision=p.precision,
                device=p.device,
                name=p.name,
                progress=progress,
                cancel=cancel,
            )

        return await self._operation(request, run, None)

    async def import_gguf(self, request: web.Request) -> web.StreamResponse:
        p = m.ModelImportParams.model_validate(await read_json(request, limit=self._limit))
        path = Path(_local_path(p.path, "path"))  # a 400 before the stream starts

        def run(progress: ProgressCallback, cancel: CancelToken) -> Awaitable[ModelView]:
            return self.service.import_gguf(path, name=p.name, progress=progress, cancel=cancel)

        return await self._operation(request, run, None)

    async def verify(self, request: web.Request) -> web.StreamResponse:
        variant = self.service.resolve(request.match_info["model"])

        def run(progress: ProgressCallback, cancel: CancelToken) -> Awaitable[Any]:
            return self.service.verify_fidelity(variant.id, progress=progress, cancel=cancel)

        def done(report: Any) -> BaseModel:
            return translate.fidelity_result(variant.id, report)

        return await self._operation(request, run, variant.id, done)

    async def _operation(
        self,
        request: web.Request,
        run: Operation,
        model_id: str | None,
        done: Callable[[Any], BaseModel] = lambda view: translate.model_info(view),
    ) -> web.StreamResponse:
        """Progress and state changes as SSE while `run` works, then `done` or `error`. A client
        that goes away cancels it; the engine keeps partial files, so it resumes next time."""
        sse = SseStream(request)
        await sse.open()
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def on_progress(p: Progress) -> None:
            queue.put_nowait(("progress", json.dumps(progress_data(p))))

        def on_state(e: ModelStateEvent) -> None:
            if model_id is None or e.model_id == model_id:
                queue.put_nowait(("state", _dumps(translate.state_changed(e))))

        async def send(item: tuple[str, str]) -> None:
            await sse.send(item[1], item[0])

        unsubscribe = self.service.events.add_listener(on_state)
        cancel = CancelToken()
        task = asyncio.ensure_future(run(on_progress, cancel))
        try:
            await pump(queue, task, send)
            try:
                result = task.result()
            except Exception as e:
                await sse.send(json.dumps(to_api_error(e, request).body()), "error")
            else:
                await sse.send(_dumps(done(result)), "done")
        except (asyncio.CancelledError, *CLIENT_GONE) as e:
            cancel.cancel("the client disconnected")
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            unsubscribe()
        return await sse.close()

    # -- remote deployments ------------------------------------------------------------------------
    async def remotes(self, request: web.Request) -> web.Response:
        return wire(remotes.listing(self.service))

    async def attach_remote(self, request: web.Request) -> web.Response:
        p = RemoteAttachParams.model_validate(await read_json(request, limit=self._limit))
        if p.api_key_env is not None and not SECRET_CALLER.get():
            # The engine would send that variable's value to a URL the caller chose: only its
            # own user (who can read the home secret) may name one, not any API-key holder.
            raise ApiError(
                403,
                "Naming one of the engine's environment variables (apiKeyEnv) needs the home "
                "secret, not just the API key.",
                param="apiKeyEnv",
                code="secret_required",
            )
        return wire(await remotes.attach(self.service, p))

    async def detach_remote(self, request: web.Request) -> web.Response:
        p = RemoteDetachParams.model_validate({"remote": request.match_info["remote"]})
        return wire(await remotes.detach(self.service, p.remote))

    # -- cache, hardware, status -------------------------------------------------------------------
    def _cache_result(self) -> m.CacheInfoResult:
        return translate.cache_info(self.service.cache_info(), self.service.cache.list())

    async def cache(self, request: web.Request) -> web.Response:
        return wire(await asyncio.to_thread(self._cache_result))

    async def cache_move(self, request: web.Request) -> web.Response:
        p = m.CacheMoveParams.model_validate(await read_json(request, limit=self._limit))
        await self.service.cache_move(Path(p.path).expanduser())
        return wire(self._cache_result())

    async def cache_verify(self, request: web.Request) -> web.Response:
        p = m.CacheVerifyParams.model_validate(await self._body(request))
        problems = await self.service.cache_verify(p.model)
        return wire(m.CacheVerifyResult(ok=not any(problems.values()), problems=problems))

    async def hardware(self, request: web.Request) -> web.Response:
        refresh = bool(_bool(request, "refresh"))
        hw = await asyncio.to_thread(self.service.hardware, refresh)
        return wire(translate.hardware(hw))

    def service_status(self) -> s.ServiceStatus:
        st = self.service.status()
        return s.ServiceStatus(
            version=st.version,
            pid=st.pid,
            home=str(st.home),
            cache_path=str(st.cache_path),
            rest_url=self.info.url,
            started_at=st.started_at,
            mode="engine",
            forwarded_to=None,
            loaded=[translate.model_info(v) for v in st.loaded],
            active_requests=st.active_requests,
            queued_requests=st.queued_requests,
            memory_budget=st.memory_budget,
            threads=st.threads,
        )

    async def status(self, request: web.Request) -> web.Response:
        return wire(self.service_status())

    async def history(self, request: web.Request) -> web.Response:
        t = self.service.telemetry
        st = self.service.status()
        return wire(
            s.TelemetryHistoryResult(
                samples=[translate.telemetry_sample(x, st) for x in t.samples],
                requests=[translate.request_telemetry(r) for r in t.requests],
            )
        )

    # -- the live event stream ---------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        sse = SseStream(request)
        await sse.open()
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=1000)

        def put(item: tuple[str, str]) -> None:
            if queue.full():  # a slow reader loses its oldest events, never slows the engine
                queue.get_nowait()
            queue.put_nowait(item)

        def on_state(e: ModelStateEvent) -> None:
            put(("state", _dumps(translate.state_changed(e))))

        def on_sample(x: SystemSample) -> None:
            put(("sample", _dumps(translate.telemetry_sample(x, self.service.status()))))

        def on_request(r: RequestRecord) -> None:
            put(("request", _dumps(translate.request_telemetry(r))))

        t = self.service.telemetry
        unsubscribe = [
            self.service.events.add_listener(on_state),
            t.sample_events.add_listener(on_sample),
            t.request_events.add_listener(on_request),
        ]
        self._subscribers.add(queue)
        try:
            await sse.comment("connected")
            while not self.info.closing.is_set():
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    await sse.comment()  # also finds out when the client has gone
                    continue
                if item is None:
                    break
                await sse.send(item[1], item[0])
        except CLIENT_GONE:
            return sse.response
        finally:
            self._subscribers.discard(queue)
            for off in unsubscribe:
                off()
        return await sse.close()

    def close_streams(self) -> None:
        """Ends every event stream (on shutdown, so the server does not wait for their clients)."""
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
