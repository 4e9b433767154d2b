"""Handlers for the catalog, model lifecycle, cache, hardware and service status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.progress import CancelToken
from protocol.jsonrpc import models as m
from protocol.jsonrpc.service import ServiceStatus
from server import translate
from server.jsonrpc.handlers.progress import WorkDone
from server.jsonrpc.server import IngotServer, dump, parse


def service_status(server: IngotServer) -> ServiceStatus:
    st = server.service.status()
    return ServiceStatus(
        version=st.version,
        pid=st.pid,
        home=str(st.home),
        cache_path=str(st.cache_path),
        rest_url=server.rest_url,
        rest_error=server.rest_error,
        started_at=st.started_at,
        mode=server.mode,
        forwarded_to=server.forwarded_to,
        loaded=[translate.model_info(v) for v in st.loaded],
        active_requests=st.active_requests,
        queued_requests=st.queued_requests,
        memory_budget=st.memory_budget,
        threads=st.threads,
    )


def register(server: IngotServer) -> None:
    @server.feature("ingot/catalog/list")
    async def catalog_list(params: Any) -> Any:
        p = parse(m.CatalogListParams, params)
        views = server.service.list_models(
            device=p.device,
            task=p.task,
            runtime=p.runtime,
            cached_only=p.cached_only,
            fits_only=p.fits_only,
            include_all=p.include_all,
        )
        return dump(m.CatalogListResult(models=[translate.model_info(v) for v in views]))

    @server.feature("ingot/model/info")
    async def model_info(params: Any) -> Any:
        p = parse(m.ModelRef, params)
        return dump(translate.model_info(server.service.model_info(p.model)))

    @server.feature("ingot/model/download")
    async def model_download(params: Any) -> Any:
        p = parse(m.ModelDownloadParams, params)
        variant = server.service.resolve(p.model)
        wd = await WorkDone.start(server, p.work_done_token, f"Downloading {variant.id}")
        cancel = CancelToken()
        try:
            view = await server.service.download(p.model, progress=wd.report, cancel=cancel)
        except BaseException:
            cancel.cancel("request cancelled")
            wd.end("Download stopped; it resumes next time.")
            raise
        wd.end("Downloaded")
        return dump(translate.model_info(view))

    @server.feature("ingot/model/load")
    async def model_load(params: Any) -> Any:
        p = parse(m.ModelLoadParams, params)
        variant = server.service.resolve(p.model)
        wd = await WorkDone.start(server, p.work_done_token, f"Loading {variant.id}")
        try:
            view = await server.service.load(p.model, ttl_s=p.ttl, progress=wd.report)
        except asyncio.CancelledError:
            # The load itself goes on for other waiters (it is shielded); this request is over.
            wd.end("Cancelled")
            raise
        except BaseException:
            wd.end("Failed")
            raise
        wd.end("Loaded")
        return dump(translate.model_info(view))

    @server.feature("ingot/model/unload")
    async def model_unload(params: Any) -> Any:
        p = parse(m.ModelUnloadParams, params)
        gone = await server.service.unload(p.model, force=p.force)
        return dump(m.ModelUnloadResult(unloaded=gone))

    @server.feature("ingot/model/delete")
    async def model_delete(params: Any) -> Any:
        p = parse(m.ModelRef, params)
        return dump(m.ModelDeleteResult(deleted=await server.service.delete(p.model)))

    @server.feature("ingot/model/register")
    async def model_register(params: Any) -> Any:
        p = parse(m.ModelRegisterParams, params)
        view = await server.service.register(
            Path(p.path), runtime=p.runtime, name=p.name, alias=p.alias
        )
        return dump(translate.model_info(view))

    @server.feature("ingot/model/compile")
    async def model_compile(params: Any) -> Any:
        p = parse(m.ModelCompileParams, params)
        wd = await WorkDone.start(server, p.work_done_token, f"Compiling {p.source}")
        cancel = CancelToken()
        try:
            view = await server.service.compile(
                p.source,
                precision=p.precision,
                device=p.device,
                name=p.name,
                progress=wd.report,
                cancel=cancel,
            )
        except BaseException:
            cancel.cancel("request cancelled")
            wd.end("Compile stopped.")
            raise
        wd.end("Compiled")
        return dump(translate.model_info(view))

    @server.feature("ingot/model/import")
    async def model_import(params: Any) -> Any:
        p = parse(m.ModelImportParams, params)
        wd = await WorkDone.start(server, p.work_done_token, f"Importing {Path(p.path).name}")
        cancel = CancelToken()
        try:
            view = await server.service.import_gguf(
                Path(p.path), name=p.name, progress=wd.report, cancel=cancel
            )
        except BaseException:
            cancel.cancel("request cancelled")
            wd.end("Import stopped.")
            raise
        wd.end("Imported")
        return dump(translate.model_info(view))

    @server.feature("ingot/model/verify")
    async def model_verify(params: Any) -> Any:
        p = parse(m.ModelVerifyParams, params)
        variant = server.service.resolve(p.model)
        wd = await WorkDone.start(server, p.work_done_token, f"Measuring {variant.alias}")
        cancel = CancelToken()
        try:
            report = await server.service.verify_fidelity(
                variant.id, progress=wd.report, cancel=cancel
            )
        except BaseException:
            cancel.cancel("request cancelled")
            wd.end("Stopped.")
            raise
        wd.end(f"Mean KL {report.mean_kl:.4f}")
        return dump(translate.fidelity_result(variant.id, report))

    @server.feature("ingot/cache/info")
    async def cache_info(params: Any) -> Any:
        svc = server.service
        return dump(translate.cache_info(svc.cache_info(), svc.cache.list()))

    @server.feature("ingot/cache/move")
    async def cache_move(params: Any) -> Any:
        p = parse(m.CacheMoveParams, params)
        svc = server.service
        info = await svc.cache_move(Path(p.path))
        return dump(translate.cache_info(info, svc.cache.list()))

    @server.feature("ingot/cache/verify")
    async def cache_verify(params: Any) -> Any:
        p = parse(m.CacheVerifyParams, params)
        report = await server.service.cache_verify(p.model)
        return dump(m.CacheVerifyResult(ok=not any(report.values()), problems=report))

    @server.feature("ingot/hardware")
    async def hardware(params: Any) -> Any:
        return dump(translate.hardware(server.service.hardware(refresh=True)))

    @server.feature("ingot/service/status")
    async def status(params: Any) -> Any:
        return dump(service_status(server))
