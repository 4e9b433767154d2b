"""InProcessClient: the engine itself, in the CLI's own process (when no service runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.cli.client import (
    ChatOutcome,
    ChatTurn,
    EngineClient,
    ProgressReport,
    ProgressSink,
    TextSink,
)

if TYPE_CHECKING:
    from engine.progress import Progress
    from engine.service import EngineService
    from protocol.jsonrpc import models as m
    from protocol.jsonrpc.embeddings import EmbedParams, EmbedResult
    from protocol.jsonrpc.remotes import RemoteAttachParams, RemoteInfo, RemoteListResult
    from protocol.jsonrpc.service import ServiceStatus


def _report(sink: ProgressSink) -> Any:
    def on_progress(p: Progress) -> None:
        sink(
            ProgressReport(
                stage=p.stage,
                message=p.message,
                fraction=p.fraction,
                bytes_done=p.bytes_done,
                bytes_total=p.bytes_total,
                file=p.file,
            )
        )

    return on_progress


class InProcessClient(EngineClient):
    where = "in-process"

    def __init__(self, service: EngineService) -> None:
        self.service = service

    @classmethod
    async def create(cls, home: Path) -> InProcessClient:
        """Build and start the engine (call on the loop that will use it)."""
        from engine.bootstrap import build_engine
        from engine.config import EngineConfig

        service = build_engine(EngineConfig.from_env(home=home))
        await service.start()
        return cls(service)

    async def catalog(self, params: m.CatalogListParams) -> m.CatalogListResult:
        from protocol.jsonrpc import models as m
        from server import translate

        views = self.service.list_models(
            device=params.device,
            task=params.task,
            runtime=params.runtime,
            cached_only=params.cached_only,
            fits_only=params.fits_only,
            include_all=params.include_all,
        )
        return m.CatalogListResult(models=[translate.model_info(v) for v in views])

    async def model_info(self, model: str) -> m.ModelInfo:
        from server import translate

        return translate.model_info(self.service.model_info(model))

    async def download(self, model: str, progress: ProgressSink) -> m.ModelInfo:
        from engine.progress import CancelToken
        from server import translate

        cancel = CancelToken()
        try:
            view = await self.service.download(model, progress=_report(progress), cancel=cancel)
        except BaseException:
            # The engine cancels the token itself on task cancellation; this also covers any
            # other exit path, so the worker thread never runs on unobserved.
            cancel.cancel("the command was interrupted")
            raise
        return translate.model_info(view)

    async def load(self, model: str, ttl: float | None, progress: ProgressSink) -> m.ModelInfo:
        from server import translate

        return translate.model_info(
            await self.service.load(model, ttl_s=ttl, progress=_report(progress))
        )

    async def unload(self, model: str, force: bool) -> m.ModelUnloadResult:
        from protocol.jsonrpc import models as m

        return m.ModelUnloadResult(unloaded=await self.service.unload(model, force=force))

    async def delete(self, model: str) -> m.ModelDeleteResult:
        from protocol.jsonrpc import models as m

        return m.ModelDeleteResult(deleted=await self.service.delete(model))

    async def register(self, params: m.ModelRegisterParams) -> m.ModelInfo:
        from server import translate

        view = await self.service.register(
            Path(params.path), runtime=params.runtime, name=params.name, alias=params.alias
        )
        return translate.model_info(view)

    async def compile(self, params: m.ModelCompileParams, progress: ProgressSink) -> m.ModelInfo:
        from engine.progress import CancelToken
        from server import translate

        cancel = CancelToken()
        try:
            view = await self.service.compile(
                params.source,
                precision=params.precision,
                device=params.device,
                name=params.name,
                progress=_report(progress),
                cancel=cancel,
            )
        except BaseException:
            cancel.cancel("the command was interrupted")
            raise
        return translate.model_info(view)

    async def import_gguf(self, params: m.ModelImportParams, progress: ProgressSink) -> m.ModelInfo:
        from engine.progress import CancelToken
        from server import translate

        cancel = CancelToken()
        try:
            view = await self.service.import_gguf(
                Path(params.path), name=params.name, progress=_report(progress), cancel=cancel
            )
        except BaseException:
            cancel.cancel("the command was interrupted")
            raise
        return translate.model_info(view)

    async def verify_fidelity(self, model: str, progress: ProgressSink) -> m.FidelityResult:
        from engine.progress import CancelToken
        from server import translate

        cancel = CancelToken()
        variant = self.service.resolve(model)
        try:
            report = await self.service.verify_fidelity(
                variant.id, progress=_report(progress), cancel=cancel
            )
        except BaseException:
            cancel.cancel("the command was interrupted")
            raise
        return translate.fidelity_result(variant.id, report)

    async def cache_info(self) -> m.CacheInfoResult:
        from server import translate

        return translate.cache_info(self.service.cache_info(), self.service.cache.list())

    async def cache_move(self, path: str) -> m.CacheInfoResult:
        from server import translate

        await self.service.cache_move(Path(path))
        return translate.cache_info(self.service.cache_info(), self.service.cache.list())

    async def cache_verify(self, model: str | None) -> m.CacheVerifyResult:
        from protocol.jsonrpc import models as m

        report = await self.service.cache_verify(model)
        problems = {k: v for k, v in report.items() if v}
        return m.CacheVerifyResult(ok=not problems, problems=report)

    async def embed(self, params: EmbedParams) -> EmbedResult:
        from server import embeddings

        result = await self.service.embed(embeddings.from_rpc(params))
        return embeddings.rpc_result(result, params.encoding_format)

    async def hardware(self) -> m.HardwareResult:
        from server import translate

        return translate.hardware(self.service.hardware())

    async def status(self) -> ServiceStatus:
        from protocol.jsonrpc.service import ServiceStatus
        from server import translate

        st = self.service.status()
        return ServiceStatus(
            version=st.version,
            pid=st.pid,
            home=str(st.home),
            cache_path=str(st.cache_path),
            rest_url=None,
            started_at=st.started_at,
            mode="engine",
            loaded=[translate.model_info(v) for v in st.loaded],
            active_requests=st.active_requests,
            queued_requests=st.queued_requests,
            memory_budget=st.memory_budget,
            threads=st.threads,
        )

    async def chat(self, turn: ChatTurn, on_text: TextSink) -> ChatOutcome:
        from engine.generation import SamplingParams
        from engine.requests import ChatRequest, Delta

        p = turn.params
        req = ChatRequest(
            model=turn.model,
            messages=turn.messages,
            params=SamplingParams(
                max_tokens=p.get("max_tokens"),
                temperature=p.get("temperature"),
                top_p=p.get("top_p"),
                top_k=p.get("top_k"),
                seed=p.get("seed"),
            ),
            ttl_s=turn.ttl,
            kind="console",
        )
        stream = self.service.chat(req)
        try:
            async for ev in stream:
                if isinstance(ev, Delta):
                    on_text(ev.text)
                    continue
                r = ev.record
                return ChatOutcome(
                    model=ev.model_id,
                    text=ev.text,
                    finish_reason=ev.finish_reason,
                    prompt_tokens=ev.usage.prompt_tokens,
                    completion_tokens=ev.usage.completion_tokens,
                    ttft_ms=r.ttft_ms,
                    prefill_tps=r.prefill_tps,
                    decode_tps=r.decode_tps,
                    total_ms=r.total_ms,
                )
        finally:
            # Closing the generator on cancellation halts the runtime within a token.
            await stream.aclose()  # type: ignore[attr-defined]
        raise RuntimeError("the engine's stream ended without a result")

    async def attach_remote(self, params: RemoteAttachParams) -> RemoteInfo:
        from server import remotes

        return await remotes.attach(self.service, params)

    async def detach_remote(self, remote: str) -> RemoteInfo:
        from server import remotes

        return await remotes.detach(self.service, remote)

    async def remotes(self) -> RemoteListResult:
        from server import remotes

        return remotes.listing(self.service)

    async def close(self) -> None:
        await self.service.close()
