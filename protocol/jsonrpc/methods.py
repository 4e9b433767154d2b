"""Every ingot/* JSON-RPC method, registered with its wire types, errors, examples and docs."""

from __future__ import annotations

from typing import Final

from protocol.jsonrpc import generation as g
from protocol.jsonrpc import models as m
from protocol.jsonrpc import remotes as r
from protocol.jsonrpc import service as s
from protocol.registry import Direction, MethodSpec, register

C2S: Final[Direction] = "client->server"
S2C: Final[Direction] = "server->client"
RESOLVE = ("invalid_request", "model_not_found")
RUN = (
    *RESOLVE,
    "model_not_cached",
    "runtime_unavailable",
    "load_failed",
    "model_does_not_fit",
    "remote_unavailable",
)
GEN = (*RUN, "context_length_exceeded", "engine_busy", "cancelled", "generation_failed")

STREAM_DOC = (
    "With `partialResultToken`, every text delta arrives while the request runs as "
    "`$/progress {token, value: StreamDelta}` (LSP partial results); the response carries the "
    "full text. `$/cancelRequest` stops generation within one token and answers -32800 with "
    "`data.tokens`, the number of tokens produced."
)
WORK_DOC = (
    "Reports LSP work-done progress (`$/progress` begin/report/end with percentage and bytes) on "
    "`workDoneToken`, or on a token the server creates with `window/workDoneProgress/create`. "
    "`$/cancelRequest` or `window/workDoneProgress/cancel` stops it. The `end` message says how "
    "it ended: done (e.g. `Downloaded`), stopped by a cancel, or `Failed` (a download: kept for "
    "next time) with the error in the response."
)

register(
    MethodSpec(
        "ingot/catalog/list",
        "request",
        C2S,
        "List catalog variants with their cache, load and fit state on this machine.",
        m.CatalogListParams,
        m.CatalogListResult,
        doc="Variants the hardware cannot run are left out unless `includeAll` is set; each "
        "says why in `fitReason`.",
        example_params={"cachedOnly": True},
    ),
    MethodSpec(
        "ingot/model/info",
        "request",
        C2S,
        "Resolve an alias, name or id and describe that variant.",
        m.ModelRef,
        m.ModelInfo,
        errors=RESOLVE,
        example_params={"model": "smollm2-135m"},
    ),
    MethodSpec(
        "ingot/model/download",
        "request",
        C2S,
        "Download (or build) a variant into the cache, with progress; resumable after a cancel.",
        m.ModelDownloadParams,
        m.ModelInfo,
        errors=(
            *RESOLVE,
            "download_failed",
            "disk_full",
            "toolchain_missing",
            "compile_failed",
            "cancelled",
            "model_busy",
        ),
        doc=WORK_DOC,
        example_params={"model": "smollm2-135m", "workDoneToken": "dl-1"},
    ),
    MethodSpec(
        "ingot/model/load",
        "request",
        C2S,
        "Load a cached variant into memory with a time-to-live.",
        m.ModelLoadParams,
        m.ModelInfo,
        errors=RUN,
        doc="`ttl` in seconds: negative keeps it until unloaded, 0 unloads it when the running "
        "requests finish. Every use renews the TTL. " + WORK_DOC,
        example_params={"model": "smollm2-135m", "ttl": 600},
    ),
    MethodSpec(
        "ingot/model/unload",
        "request",
        C2S,
        "Unload a model now, or when its running requests finish (unless forced).",
        m.ModelUnloadParams,
        m.ModelUnloadResult,
        errors=(*RESOLVE, "model_not_loaded"),
        example_params={"model": "smollm2-135m", "force": False},
        example_result={"unloaded": True},
    ),
    MethodSpec(
        "ingot/model/delete",
        "request",
        C2S,
        "Remove a variant from the cache (and a registered model from the catalog).",
        m.ModelRef,
        m.ModelDeleteResult,
        errors=(*RESOLVE, "model_busy", "cache_error"),
        example_params={"model": "smollm2-135m"},
        example_result={"deleted": True},
    ),
    MethodSpec(
        "ingot/model/register",
        "request",
        C2S,
        "Bring your own model: register an ONNX Runtime GenAI or Hugging Face folder.",
        m.ModelRegisterParams,
        m.ModelInfo,
        errors=("invalid_request", "invalid_model_folder"),
        example_params={"path": "/models/my-model", "runtime": "onnx-genai"},
    ),
    MethodSpec(
        "ingot/model/compile",
        "request",
        C2S,
        "Compile a GGUF file, a Hugging Face folder or an HF-format catalog model to ONNX.",
        m.ModelCompileParams,
        m.ModelInfo,
        errors=(
            "invalid_request",
            "invalid_model_folder",
            "toolchain_missing",
            "compile_failed",
            "cancelled",
            "model_busy",
        ),
        doc=WORK_DOC,
        example_params={"source": "/models/model.gguf", "precision": "int8", "device": "cpu"},
    ),
    MethodSpec(
        "ingot/model/import",
        "request",
        C2S,
        "Import a GGUF file as an ONNX Runtime GenAI model that keeps the GGUF's own quantised "
        "blocks (Q4_0, Q4_1, Q8_0), with the GGUF's tokenizer and chat template.",
        m.ModelImportParams,
        m.ModelInfo,
        errors=(
            "invalid_request",
            "invalid_model_folder",
            "toolchain_missing",
            "compile_failed",
            "cancelled",
            "model_busy",
        ),
        doc=WORK_DOC,
        example_params={"path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "name": "smollm2-q4"},
    ),
    MethodSpec(
        "ingot/model/verify",
        "request",
        C2S,
        "Measure a downloaded ONNX model's fidelity: the KL divergence of its next-token "
        "distributions from its source weights (the dequantised GGUF or the Hugging Face model "
        "it was built from). Target: mean KL <= 0.01.",
        m.ModelVerifyParams,
        m.FidelityResult,
        errors=(
            "model_not_found",
            "invalid_request",
            "toolchain_missing",
            "cancelled",
            "model_busy",
        ),
        doc=WORK_DOC,
        example_params={"model": "smollm2-135m"},
    ),
    MethodSpec(
        "ingot/remote/attach",
        "request",
        C2S,
        "Attach a remote vLLM deployment by URL: each model it serves becomes a model here.",
        r.RemoteAttachParams,
        r.RemoteInfo,
        errors=("invalid_request",),
        doc="Reads the deployment's `/health` and `/v1/models` (with the key as a bearer token); "
        "each served model becomes a variant with runtime `remote` (no files, no memory here; "
        "context from vLLM's `max_model_len`), kept across restarts. Attaching the same URL "
        "again refreshes its models and key. A bad URL, a deployment that does not answer, or "
        "a refused key is `invalid_request` with `data.param` (`url`, `apiKey`) and a hint.",
        example_params={"url": "http://gpu-node:8000", "apiKeyEnv": "VLLM_API_KEY"},
    ),
    MethodSpec(
        "ingot/remote/list",
        "request",
        C2S,
        "The attached remote deployments with their models and health.",
        None,
        r.RemoteListResult,
    ),
    MethodSpec(
        "ingot/remote/detach",
        "request",
        C2S,
        "Detach a remote deployment: unload and forget its models and its key.",
        r.RemoteDetachParams,
        r.RemoteInfo,
        errors=("invalid_request", "model_not_found"),
        doc="Nothing stops on the deployment itself.",
        example_params={"remote": "gpu-node-8000"},
    ),
    MethodSpec(
        "ingot/cache/info",
        "request",
        C2S,
        "Where the cache is, what it holds and how much disk is free.",
        None,
        m.CacheInfoResult,
    ),
    MethodSpec(
        "ingot/cache/move",
        "request",
        C2S,
        "Move the whole cache to another folder (models are unloaded first).",
        m.CacheMoveParams,
        m.CacheInfoResult,
        errors=("cache_error", "model_busy"),
        example_params={"path": "/data/ingot-cache"},
    ),
    MethodSpec(
        "ingot/cache/verify",
        "request",
        C2S,
        "Recompute sizes and sha256 of cached files against their manifests.",
        m.CacheVerifyParams,
        m.CacheVerifyResult,
        errors=RESOLVE,
        example_result={"ok": True, "problems": {"smollm2-135m-instruct-cpu-int8:1": []}},
    ),
    MethodSpec(
        "ingot/hardware",
        "request",
        C2S,
        "The hardware profile: CPU, RAM, NVIDIA GPUs and execution providers.",
        None,
        m.HardwareResult,
    ),
    MethodSpec(
        "ingot/service/status",
        "request",
        C2S,
        "Engine status: REST URL, mode (engine or forwarding), loaded models, queue.",
        None,
        s.ServiceStatus,
    ),
    MethodSpec(
        "ingot/chat",
        "request",
        C2S,
        "Chat completion with sampling, tools and response formats; streams partial results.",
        g.ChatParams,
        g.GenerationResult,
        errors=GEN,
        progress=g.StreamDelta,
        doc=STREAM_DOC
        + " A forced or required tool call (`toolChoice`) and `responseFormat` json_schema "
        "use constrained decoding, so the output is valid JSON for the schema.",
        example_params={
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Say hello."}],
            "maxTokens": 32,
            "partialResultToken": "chat-1",
        },
    ),
    MethodSpec(
        "ingot/complete",
        "request",
        C2S,
        "Raw completion of a prompt, with an optional suffix (fill-in-the-middle).",
        g.CompleteParams,
        g.GenerationResult,
        errors=GEN,
        progress=g.StreamDelta,
        doc=STREAM_DOC,
        example_params={"model": "smollm2-135m", "prompt": "def add(a, b):\n    ", "maxTokens": 16},
    ),
    MethodSpec(
        "ingot/edit",
        "request",
        C2S,
        "Rewrite a range of an open document by instruction (inline chat); streams the text.",
        g.EditParams,
        g.EditResult,
        errors=(*GEN, "model_not_loaded"),
        progress=g.StreamDelta,
        doc="The document must be open (`textDocument/didOpen`, incremental sync). Without "
        "`model`, the inline model or the most recently used loaded model answers. " + STREAM_DOC,
        example_params={
            "uri": "file:///src/a.py",
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
            "instruction": "Add type hints.",
        },
    ),
    MethodSpec(
        "ingot/console/open",
        "request",
        C2S,
        "Open a console (playground) session with a model, system prompt and sampling.",
        g.ConsoleOpenParams,
        g.ConsoleSession,
        errors=RUN,
        example_params={"model": "smollm2-135m", "system": "Be brief.", "temperature": 0.7},
    ),
    MethodSpec(
        "ingot/console/send",
        "request",
        C2S,
        "Send a user message in a session; streams the answer and keeps the history.",
        g.ConsoleSendParams,
        g.ConsoleSendResult,
        errors=(*GEN,),
        progress=g.StreamDelta,
        doc="The history changes only when an answer completes; `session.tokens` is the "
        "conversation's size in the model's context. " + STREAM_DOC,
    ),
    MethodSpec(
        "ingot/console/history",
        "request",
        C2S,
        "The session's messages and token count.",
        g.ConsoleRef,
        g.ConsoleSession,
        errors=("invalid_request",),
    ),
    MethodSpec(
        "ingot/console/reset",
        "request",
        C2S,
        "Forget the session's messages (the system prompt stays).",
        g.ConsoleRef,
        g.ConsoleSession,
        errors=("invalid_request",),
    ),
    MethodSpec(
        "ingot/console/close",
        "request",
        C2S,
        "Close a session.",
        g.ConsoleRef,
        None,
        errors=("invalid_request",),
    ),
    MethodSpec(
        "ingot/telemetry/subscribe",
        "request",
        C2S,
        "Receive ingot/telemetry/sample every interval and ingot/telemetry/request per request.",
        s.TelemetrySubscribeParams,
        s.TelemetrySubscribeResult,
        example_params={"intervalMs": 1000},
        example_result={"intervalMs": 1000},
    ),
    MethodSpec(
        "ingot/telemetry/unsubscribe",
        "request",
        C2S,
        "Stop telemetry notifications.",
        None,
        None,
    ),
    MethodSpec(
        "ingot/telemetry/history",
        "request",
        C2S,
        "The recent system samples and request records (ring buffers).",
        None,
        s.TelemetryHistoryResult,
    ),
    MethodSpec(
        "ingot/serviceReady",
        "notification",
        S2C,
        "Sent after `initialized` once the REST port answers: its URL and the engine's mode.",
        s.ServiceReady,
        None,
    ),
    MethodSpec(
        "ingot/model/stateChanged",
        "notification",
        S2C,
        "A model changed state (downloading, compiling, loading, loaded, unloaded, failed, ...).",
        s.ModelStateChanged,
        None,
    ),
    MethodSpec(
        "ingot/telemetry/sample",
        "notification",
        S2C,
        "A system sample: CPU, engine RSS, RAM, GPUs, loaded models with TTL left, queue.",
        s.TelemetrySample,
        None,
    ),
    MethodSpec(
        "ingot/telemetry/request",
        "notification",
        S2C,
        "The measurements of one finished request (queue, load, TTFT, tokens/s).",
        g.RequestTelemetry,
        None,
    ),
    types=[s.InitializationOptions],
)
