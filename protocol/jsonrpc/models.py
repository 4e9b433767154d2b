"""Wire types for the catalog, models, cache and hardware methods."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocol.base import WireModel


class Capabilities(WireModel):
    chat: bool
    tools: bool
    json_schema: bool
    fim: bool


class ModelInfo(WireModel):
    """A catalog variant with its state on this machine."""

    id: str = Field(description="`name:version`, unique.")
    name: str
    version: int
    alias: str = Field(description="Short name that resolves to the best variant for this machine.")
    display_name: str
    publisher: str
    description: str = ""
    # `remote`: served by an attached deployment (ingot/remote/attach), not on this machine.
    device: Literal["cpu", "cuda", "remote"]
    framework: Literal["onnx", "vllm"]
    runtime: Literal["onnx-genai", "vllm", "onnxruntime", "remote"]
    source: str = Field(description="Where the files come from, e.g. `huggingface:repo@rev/sub`.")
    build: Literal["gguf-to-hf", "hf-to-onnx", "gguf-import", "embedding-export"] | None = Field(
        None, description="How this machine makes it from its source, if it is not downloaded."
    )
    size_bytes: int
    context_length: int
    max_output_tokens: int
    license: str
    license_url: str | None = None
    task: str
    capabilities: Capabilities
    cached: bool
    path: str | None = None
    registered: bool = False
    loaded: bool
    loading: bool = False
    ttl_seconds: float | None = Field(None, description="TTL of the loaded model; negative = kept.")
    expires_in_seconds: float | None = Field(
        None, description="Seconds until the TTL unloads it; null while in use or kept."
    )
    memory_bytes: int | None = None
    active_requests: int = 0
    queued_requests: int = 0
    fits: bool = Field(description="Enough free memory for weights + KV cache at its context.")
    fit_reason: str
    memory_needed_bytes: int
    offered: bool = Field(description="The hardware can run it (hidden by default otherwise).")
    runtime_unavailable: str | None = Field(
        None, description="Why its runtime cannot run here, if so."
    )
    runtime_info: dict[str, Any] | None = Field(
        None,
        description="While loaded: the runtime's process (`pid`), how many generations it runs at "
        "once, vLLM's `plan` (device, dtype, maxModelLen, maxNumSeqs, gpuMemoryUtilization, ...) "
        "and its last `metrics` (vLLM: running/waiting requests, KV-cache usage, token totals; "
        "ONNX: `batching_ready`, `batched_rows`, `batch_steps`, `batched_tokens`, "
        "`prompt_cache_hits`, `prompt_cache_tokens`).",
    )


class CatalogListParams(WireModel):
    device: Literal["cpu", "cuda"] | None = None
    task: str | None = None
    runtime: str | None = Field(
        None, description="`onnx-genai`/`onnx`, `vllm`, or `onnxruntime` (embedding models)."
    )
    cached_only: bool = False
    fits_only: bool = False
    include_all: bool = Field(False, description="Also variants this hardware cannot run.")


class CatalogListResult(WireModel):
    models: list[ModelInfo]


class ModelRef(WireModel):
    model: str = Field(description="Alias, name or id.", min_length=1, max_length=200)


class ModelDownloadParams(ModelRef):
    work_done_token: str | int | None = Field(
        None, description="LSP work-done progress token; created by the server when absent."
    )


class ModelLoadParams(ModelRef):
    ttl: float | None = Field(
        None,
        description="Seconds to keep it after the last use; negative = until unloaded; "
        "0 = unload when the running requests finish.",
    )
    work_done_token: str | int | None = None


class ModelUnloadParams(ModelRef):
    force: bool = Field(False, description="Stop running generations instead of waiting for them.")


class ModelUnloadResult(WireModel):
    unloaded: bool = Field(description="Gone now (false: it unloads when running requests end).")


class ModelDeleteResult(WireModel):
    deleted: bool


class ModelRegisterParams(WireModel):
    path: str = Field(
        description="An ONNX Runtime GenAI folder or a Hugging Face safetensors folder."
    )
    runtime: Literal["onnx-genai", "vllm"] = "onnx-genai"
    name: str | None = None
    alias: str | None = None


class ModelCompileParams(WireModel):
    source: str = Field(description="A Hugging Face folder or a GGUF file, or a catalog model.")
    precision: Literal["int4", "int8", "fp16", "fp32"] = "int8"
    device: Literal["cpu", "cuda"] = "cpu"
    name: str | None = None
    work_done_token: str | int | None = None


class ModelImportParams(WireModel):
    path: str = Field(
        description="A .gguf file. Q4_0, Q4_1 and Q8_0 tensors keep their own quantised blocks "
        "(no re-quantisation); other types are re-quantised to int8 and listed in the model's "
        "description."
    )
    name: str | None = Field(None, description="Name of the imported model (default: file stem).")
    work_done_token: str | int | None = None


class ModelVerifyParams(WireModel):
    model: str
    work_done_token: str | int | None = None


class FidelityResult(WireModel):
    """How faithful a built model is to its source weights. Chat models (`metric: kl`):
    KL(reference || model) of next-token distributions over a fixed ~300-token text. Embedding
    models (`metric: cosine`): cosine of their vectors with the torch reference's over fixed
    sentences."""

    model: str
    metric: Literal["kl", "cosine"] = "kl"
    mean_kl: float | None = None
    median_kl: float | None = None
    max_kl: float | None = None
    top1_agreement: float | None = Field(
        None, description="Share of positions whose most likely token agrees."
    )
    min_cosine: float | None = Field(None, description="The lowest cosine over the sentences.")
    mean_cosine: float | None = None
    sentences: int | None = None
    tokens: int
    seconds: float
    target: float = Field(
        description="The mean KL (at most) or the lowest cosine (at least) Ingot accepts."
    )
    meets_target: bool


class CacheEntryInfo(WireModel):
    id: str
    path: str
    size_bytes: int
    source: str
    created_at: float


class CacheInfoResult(WireModel):
    path: str
    models: int
    size_bytes: int
    free_bytes: int
    entries: list[CacheEntryInfo]


class CacheMoveParams(WireModel):
    path: str


class CacheVerifyParams(WireModel):
    model: str | None = None


class CacheVerifyResult(WireModel):
    ok: bool
    problems: dict[str, list[str]] = Field(description="Per model id, what does not match.")


class GpuInfo(WireModel):
    index: int
    name: str
    memory_total: int
    memory_free: int
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None


class HardwareResult(WireModel):
    cpu_model: str
    cpu_cores_physical: int
    cpu_cores_logical: int
    ram_total: int
    ram_available: int
    gpus: list[GpuInfo]
    execution_providers: list[str]
    os: str
    nvml_error: str | None = None
    devices: list[str]
