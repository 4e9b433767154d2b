"""Wire types for the service: status, readiness, state changes and telemetry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol.base import WireModel
from protocol.jsonrpc.generation import RequestTelemetry
from protocol.jsonrpc.models import ModelInfo


class InitializationOptions(WireModel):
    """`initializationOptions` of `initialize`."""

    home: str | None = Field(None, description="Ingot home (default INGOT_HOME or ~/.ingot).")
    rest_host: str = "127.0.0.1"
    rest_port: int | None = Field(None, ge=0, le=65535, description="0 = a free port.")
    rest_enabled: bool = True
    default_ttl: float | None = None
    memory_budget_mb: float | None = Field(None, gt=0)
    threads: int | None = Field(None, ge=1, le=1024)
    inline_model: str | None = Field(None, description="Model for inline completions.")


class ServiceStatus(WireModel):
    version: str
    pid: int
    home: str
    cache_path: str
    rest_url: str | None
    rest_error: str | None = Field(
        None, description="Why this engine has no REST port (e.g. unsafe REST settings)."
    )
    started_at: float
    mode: Literal["engine", "forwarding"] = Field(
        description="`forwarding`: another engine owns this home; requests go to it."
    )
    forwarded_to: str | None = None
    loaded: list[ModelInfo]
    active_requests: int
    queued_requests: int
    memory_budget: int
    threads: int | None


class ServiceReady(WireModel):
    url: str
    pid: int
    mode: Literal["engine", "forwarding"]


class ModelStateChanged(WireModel):
    model_id: str
    state: str = Field(
        description="downloading, compiling, cached, loading, loaded, unloading, unloaded, "
        "failed, cancelled, deleted, registered"
    )
    reason: str | None = None
    at: float
    expires_at: float | None = None


class TelemetrySubscribeParams(WireModel):
    interval_ms: int = Field(1000, ge=100, le=60_000)


class TelemetrySubscribeResult(WireModel):
    interval_ms: int


class GpuSample(WireModel):
    index: int
    name: str
    utilization_pct: float | None
    memory_used: int
    memory_total: int
    temperature_c: float | None
    power_w: float | None


class LoadedModelSample(WireModel):
    id: str
    ttl_remaining_s: float | None
    memory_bytes: int | None
    active_requests: int
    queued_requests: int
    runtime_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The runtime's own metrics (vLLM: requests running/waiting, KV-cache usage "
        "0..1, prompt/generation token totals, preemptions); empty for ONNX Runtime GenAI.",
    )


class TelemetrySample(WireModel):
    at: float
    cpu_pct: float
    engine_cpu_pct: float
    engine_rss: int
    ram_used: int
    ram_total: int
    gpus: list[GpuSample]
    loaded: list[LoadedModelSample]
    active_requests: int
    queued_requests: int


class TelemetryHistoryResult(WireModel):
    samples: list[TelemetrySample]
    requests: list[RequestTelemetry]


class Empty(WireModel):
    pass
