"""Translation between engine objects and wire models, shared by every adapter (JSON-RPC, REST, CLI)."""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import Any

from engine.cache import CacheEntry
from engine.catalog.fit import memory_needed
from engine.compile.embeddings.build import COSINE_TARGET, EmbeddingFidelityReport
from engine.compile.fidelity import KL_TARGET, FidelityReport
from engine.errors import IngotError, InvalidRequest
from engine.events import ModelStateEvent
from engine.generation import SamplingParams
from engine.hardware import HardwareProfile
from engine.requests import ChatRequest, CompletionRequest, GenerationResult
from engine.scheduler import PRIORITY_BATCH, PRIORITY_CHAT, PRIORITY_INTERACTIVE
from engine.telemetry import RequestRecord, SystemSample
from engine.views import CacheInfo, EngineStatus, ModelView
from protocol.errors import error_for
from protocol.jsonrpc import generation as g
from protocol.jsonrpc import models as m
from protocol.jsonrpc import service as s


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def camel_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Engine dicts (snake_case) in the wire's camelCase; metric names stay as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k == "metrics" or not isinstance(v, dict):
            out[_camel(k)] = v
        else:
            out[_camel(k)] = camel_keys(v) if k != "env" else v
    return out


def model_info(view: ModelView) -> m.ModelInfo:
    v = view.variant
    return m.ModelInfo(
        id=v.id,
        name=v.name,
        version=v.version,
        alias=v.alias,
        display_name=v.display_name,
        publisher=v.publisher,
        description=v.description,
        device="remote" if v.source.kind == "remote" else v.device,
        framework=v.framework,
        runtime="remote" if v.source.kind == "remote" else v.runtime,
        source=v.source.describe(),
        build=v.build.kind if v.build else None,
        size_bytes=v.size_bytes,
        context_length=v.context_length,
        max_output_tokens=v.max_output_tokens,
        license=v.license,
        license_url=v.license_url,
        task=v.task,
        capabilities=m.Capabilities(
            chat=v.capabilities.chat,
            tools=v.capabilities.tools,
            json_schema=v.capabilities.json_schema,
            fim=v.capabilities.fim,
        ),
        cached=view.cached,
        path=str(view.path) if view.path else None,
        registered=view.registered,
        loaded=view.loaded,
        loading=view.loading,
        ttl_seconds=view.ttl_s,
        expires_in_seconds=view.expires_in_s,
        memory_bytes=view.memory_bytes,
        active_requests=view.active_requests,
        queued_requests=view.queued_requests,
        fits=view.fit.fits,
        fit_reason=view.fit.reason,
        memory_needed_bytes=memory_needed(v),
        offered=view.offered,
        runtime_unavailable=view.runtime_unavailable,
        runtime_info=camel_keys(view.runtime_info) if view.runtime_info else None,
    )


def cache_info(info: CacheInfo, entries: list[CacheEntry]) -> m.CacheInfoResult:
    return m.CacheInfoResult(
        path=str(info.path),
        models=info.models,
        size_bytes=info.size_bytes,
        free_bytes=info.free_bytes,
        entries=[
            m.CacheEntryInfo(
                id=e.manifest.id,
                path=str(e.path),
                size_bytes=e.manifest.size_bytes,
                source=e.manifest.source,
                created_at=e.manifest.created_at,
            )
            for e in entries
        ],
    )


def hardware(hw: HardwareProfile) -> m.HardwareResult:
    return m.HardwareResult(
        cpu_model=hw.cpu_model,
        cpu_cores_physical=hw.cpu_cores_physical,
        cpu_cores_logical=hw.cpu_cores_logical,
        ram_total=hw.ram_total,
        ram_available=hw.ram_available,
        gpus=[
            m.GpuInfo(
                index=x.index,
                name=x.name,
                memory_total=x.memory_total,
                memory_free=x.memory_free,
                utilization_pct=x.utilization_pct,
                temperature_c=x.temperature_c,
                power_w=x.power_w,
                driver_version=x.driver_version,
                cuda_version=x.cuda_version,
            )
            for x in hw.gpus
        ],
        execution_providers=list(hw.execution_providers),
        os=hw.os,
        nvml_error=hw.nvml_error,
        devices=list(hw.devices()),
    )


def sampling(p: g.Sampling) -> SamplingParams:
    return SamplingParams(
        max_tokens=p.max_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        seed=p.seed,
        stop=tuple(p.stop or ()),
        repetition_penalty=p.repetition_penalty,
    )


PRIORITIES = {"interactive": PRIORITY_INTERACTIVE, "chat": PRIORITY_CHAT, "batch": PRIORITY_BATCH}


def chat_request(p: g.ChatParams) -> ChatRequest:
    return ChatRequest(
        model=p.model,
        messages=[msg.model_dump(exclude_none=True) for msg in p.messages],
        params=replace(sampling(p), prediction=p.prediction or None),
        tools=p.tools,
        tool_choice=p.tool_choice,
        response_format=p.response_format,
        ttl_s=p.ttl,
        priority=PRIORITIES[p.priority or "chat"],
        kind=p.kind or "chat",
    )


def completion_request(p: g.CompleteParams) -> CompletionRequest:
    return CompletionRequest(
        model=p.model,
        prompt=p.prompt,
        suffix=p.suffix,
        params=sampling(p),
        ttl_s=p.ttl,
        priority=PRIORITIES[p.priority or "chat"],
        kind=p.kind or "complete",
    )


def request_telemetry(r: RequestRecord) -> g.RequestTelemetry:
    return g.RequestTelemetry(
        request_id=r.request_id,
        model_id=r.model_id,
        runtime=r.runtime,
        device=r.device,
        kind=r.kind,
        started_at=r.started_at,
        queue_ms=r.queue_ms,
        load_ms=r.load_ms,
        ttft_ms=r.ttft_ms,
        total_ms=r.total_ms,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        prefill_tps=r.prefill_tps,
        decode_tps=r.decode_tps,
        finish_reason=r.finish_reason,
        cached_tokens=r.cached_tokens,
    )


def generation_result(r: GenerationResult) -> g.GenerationResult:
    return g.GenerationResult(
        request_id=r.request_id,
        model=r.model_id,
        text=r.text,
        tool_calls=[
            g.ToolCall(id=c.id, function={"name": c.name, "arguments": c.arguments})
            for c in r.tool_calls
        ],
        finish_reason=r.finish_reason,
        usage=g.Usage(
            prompt_tokens=r.usage.prompt_tokens,
            completion_tokens=r.usage.completion_tokens,
            total_tokens=r.usage.total_tokens,
            cached_tokens=r.usage.cached_tokens,
            accepted_prediction_tokens=r.usage.accepted_prediction_tokens,
            rejected_prediction_tokens=r.usage.rejected_prediction_tokens,
        ),
        telemetry=request_telemetry(r.record),
    )


def state_changed(e: ModelStateEvent) -> s.ModelStateChanged:
    return s.ModelStateChanged(
        model_id=e.model_id, state=e.state, reason=e.reason, at=e.at, expires_at=e.expires_at
    )


def telemetry_sample(x: SystemSample, status: EngineStatus) -> s.TelemetrySample:
    return s.TelemetrySample(
        at=x.at,
        cpu_pct=x.cpu_pct,
        engine_cpu_pct=x.engine_cpu_pct,
        engine_rss=x.engine_rss,
        ram_used=x.ram_used,
        ram_total=x.ram_total,
        gpus=[
            s.GpuSample(
                index=q.index,
                name=q.name,
                utilization_pct=q.utilization_pct,
                memory_used=q.memory_used,
                memory_total=q.memory_total,
                temperature_c=q.temperature_c,
                power_w=q.power_w,
            )
            for q in x.gpus
        ],
        loaded=[
            s.LoadedModelSample(
                id=v.variant.id,
                ttl_remaining_s=v.expires_in_s,
                memory_bytes=v.memory_bytes,
                active_requests=v.active_requests,
                queued_requests=v.queued_requests,
                runtime_metrics=(v.runtime_info or {}).get("metrics") or {},
            )
            for v in status.loaded
        ],
        active_requests=status.active_requests,
        queued_requests=status.queued_requests,
    )


def error_payload(e: IngotError) -> dict[str, Any]:
    """The structured part of an engine error, for JSON-RPC `data` and REST error bodies."""
    data: dict[str, Any] = {"kind": e.kind}
    if e.hint:
        data["hint"] = e.hint
    for k, v in e.data.items():
        if isinstance(v, str | int | float | bool | list | type(None)):
            data[k] = v
    data["code"] = error_for(e.kind).code
    return data


# Longest error message (and string in error details) sent back: an error about a huge input
# quotes only part of it, over JSON-RPC and REST alike.
MAX_MESSAGE = 2000


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """An error text that echoes a huge input back only in part."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def input_error(exc: BaseException) -> IngotError | None:
    """An OS error that only a path in the request can cause, as the invalid request it is (the
    file system refuses the name before anything is read or written)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return InvalidRequest(
            "A path in the request is longer than the file system allows.",
            hint="Give the path of an existing file or folder.",
        )
    if isinstance(exc, ValueError) and "null byte" in str(exc):
        return InvalidRequest("A path in the request contains a NUL character.")
    return None


def fidelity_result(model_id: str, r: FidelityReport | EmbeddingFidelityReport) -> m.FidelityResult:
    if isinstance(r, EmbeddingFidelityReport):
        return m.FidelityResult(
            model=model_id,
            metric="cosine",
            min_cosine=r.min_cosine,
            mean_cosine=r.mean_cosine,
            sentences=r.sentences,
            tokens=r.tokens,
            seconds=r.seconds,
            target=COSINE_TARGET,
            meets_target=r.meets_target,
        )
    return m.FidelityResult(
        model=model_id,
        mean_kl=r.mean_kl,
        median_kl=r.median_kl,
        max_kl=r.max_kl,
        top1_agreement=r.top1_agreement,
        tokens=r.tokens,
        seconds=r.seconds,
        target=KL_TARGET,
        meets_target=r.meets_target,
    )
