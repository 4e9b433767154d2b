"""Handlers for the catalog, model lifecycle, cache, hardware and service status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.progress import CancelToken, ProgressCallback
from protocol.jsonrpc import models as m
from protocol.jsonrpc.service import ServiceStatus
from server import translate
from server.jsonrpc.handlers.progress import (
    DOWNLOAD_FAILED,
    DOWNLOAD_STOPPED,
    WorkDone,
    reporting,
)
from server.jsonrpc.server import IngotServer, dump, parse

T = TypeVar("T")


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


async def with_progress(
    server: IngotServer,
    token: Any,
    title: str,
    run: Callable[[ProgressCallback, CancelToken], Awaitable[T]],
    *,
    done: str,
    stopped: str,
    failed: str = "Failed",
) -> T:
    """A cancellable engine operation (download, compile, import, verify) under work-done
    progress: a cancelled request tells the operation to stop (partial downloads stay
    resumable)."""
    cancel = CancelToken()

    async def go(wd: WorkDone) -> T:
        try:
            return await run(wd.report, cancel)
        except asyncio.CancelledError:
            cancel.cancel("request cancelled")
            raise

    return await reporting(server, token, title, go, done=done, stopped=stopped, failed=failed)


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
        view = await with_progress(
            server,
            p.work_done_token,
            f"Downloading {variant.id}",
            lambda report, cancel: server.service.download(p.model, progress=report, cancel=cancel),
            done="Downloaded",
            stopped=DOWNLOAD_STOPPED,
            failed=DOWNLOAD_FAILED,
        )
        return dump(translate.model_info(view))

    @server.feature("ingot/model/load")
    async def model_load(params: Any) -> Any:
        p = parse(m.ModelLoadParams, params)
        variant = server.service.resolve(p.model)
        # A cancel ends this request only: the load goes on for other waiters (it is shielded).
        view = await reporting(
            server,
            p.work_done_token,
            f"Loading {variant.id}",
            lambda wd: server.service.load(p.model, ttl_s=p.ttl, progress=wd.report),
            done="Loaded",
            stopped="Cancelled",
        )
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
        view = await with_progress(
            server,
            p.work_done_token,
            f"Compiling {p.source}",
            lambda report, cancel: server.service.compile(
                p.source,
                precision=p.precision,
                device=p.device,
                name=p.name,
                progress=report,
                cancel=cancel,
            ),
            done="Compiled",
            stopped="Compile stopped.",
        )
        return dump(translate.model_info(view))

    @server.feature("ingot/model/import")
    async def model_import(params: Any) -> Any:
        p = parse(m.ModelImportParams, params)
        view = await with_progress(
            server,
            p.work_done_token,
            f"Importing {Path(p.path).name}",
            lambda report, cancel: server.service.import_gguf(
                Path(p.path), name=p.name, progress=report, cancel=cancel
            ),
            done="Imported",
            stopped="Import stopped.",
        )
        return dump(translate.model_info(view))

    @server.feature("ingot/model/verify")
    async def model_verify(params: Any) -> Any:
        p = parse(m.ModelVerifyParams, params)
        variant = server.service.resolve(p.model)
        report = await with_progress(
            server,
            p.work_done_token,
            f"Measuring {variant.alias}",
            lambda report, cancel: server.service.verify_fidelity(
                variant.id, progress=report, cancel=cancel
            ),
            done="Measured",
            stopped="Stopped.",
        )
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
