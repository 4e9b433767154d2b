"""The ONNX Runtime GenAI runtime: each loaded model runs in its own worker process.

The engine side sends prompts and halts over a pipe and turns the worker's events into
GenerationEvents; the worker (onnx_worker.py) runs the blocking token loop. See onnx_worker.py
for why the token loop cannot share the engine's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from engine.catalog.variant import ModelVariant
from engine.errors import GenerationFailed, LoadFailed, RuntimeUnavailable
from engine.generation import (
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    RuntimeStats,
    TextDelta,
)
from engine.progress import ProgressCallback
from engine.runtimes.base import HaltFlag, RuntimeCapabilities
from engine.runtimes.model_worker import start_model_worker
from engine.runtimes.onnx_errors import generation_error
from engine.runtimes.onnx_session import genai_kv_bytes
from engine.runtimes.worker_process import EXIT, WorkerFailed, WorkerProcess

# How long a halted generation may take to hand the model back before we stop waiting.
HALT_GRACE_S = 30.0
# How long an unload waits for halted generations to report before stopping the worker.
CLOSE_GRACE_S = 2.0
# Generations one worker runs at once (batched, or taking turns), within this much KV memory.
MAX_CONCURRENT = 8
KV_BUDGET_BYTES = 1024**3


def kv_bytes_per_token(variant: ModelVariant, folder: Path) -> int:
    """KV-cache bytes per token, from the catalog or else from the model's genai_config.json
    (ORT GenAI keeps the CPU KV cache in float32 and the CUDA one in float16)."""
    if variant.kv is not None:
        return variant.kv.bytes_per_token()
    try:
        cfg = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return genai_kv_bytes(cfg, variant.device)


def concurrent_sequences(variant: ModelVariant, kv_per_token: int) -> int:
    """How many sequences may run at once on one model (batched, or taking turns): each holds a
    KV cache sized for its prompt plus max_output_tokens, together within KV_BUDGET_BYTES."""
    if kv_per_token <= 0:
        return 1
    per_sequence = kv_per_token * (variant.max_output_tokens + 512)
    return max(1, min(MAX_CONCURRENT, KV_BUDGET_BYTES // per_sequence))


class OnnxGenaiInstance:
    def __init__(
        self,
        variant: ModelVariant,
        worker: WorkerProcess,
        context_length: int,
        memory: int,
        concurrency: int = 1,
    ) -> None:
        self.variant_id = variant.id
        self.max_output_tokens = variant.max_output_tokens
        self.device: str = variant.device
        self.context_length = context_length
        self.memory_bytes = memory
        self.worker = worker
        self.concurrency = concurrency
        self._metrics: dict[str, float] = {}

    def on_exit(self, callback: Callable[[str], None]) -> None:
        self.worker.on_exit(callback)

    def describe(self) -> dict[str, Any]:
        return {"pid": self.worker.pid, "concurrency": self.concurrency, "metrics": self._metrics}

    async def runtime_metrics(self) -> dict[str, float]:
        """The worker's batching counters (rows decoding together, steps, tokens); per-request
        timings are in Ingot's own request records."""
        if self.worker.alive:
            with contextlib.suppress(WorkerFailed):
                got = await self.worker.call("metrics")
                self._metrics = {str(k): float(v) for k, v in dict(got).items()}
        return dict(self._metrics)

    async def count_tokens(self, text: str) -> int:
        return int(await self._call("count", text=text))

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str(await self._call("render", messages=messages))

    async def _call(self, op: str, **fields: Any) -> Any:
        try:
            return await self.worker.call(op, **fields)
        except WorkerFailed as e:
            raise GenerationFailed(e.message) from e

    async def generate(
        self, request: GenerationRequest, halt: HaltFlag
    ) -> AsyncGenerator[GenerationEvent, None]:
        # Without max_tokens, stop at the model's output limit rather than filling the whole
        # context: ORT GenAI sizes its KV buffer by max_length.
        max_new = request.params.max_tokens or self.max_output_tokens
        params = {k: v for k, v in asdict(request.params).items() if k != "stop"}
        constraint = asdict(request.constraint) if request.constraint else None
        rid, events = self.worker.open_stream()
        ended = False
        produced = 0
        started = time.monotonic()
        try:
            self.worker.send(
                {
                    "op": "generate",
                    "id": rid,
                    "prompt": request.prompt,
                    "params": params,
                    "constraint": constraint,
                    "max_new": max_new,
                    "priority": request.priority,
                }
            )
        except WorkerFailed as e:
            self.worker.close_stream(rid)
            raise GenerationFailed(e.message) from e
        except BaseException:
            self.worker.close_stream(rid)
            raise
        remove = halt.on_halt(lambda _: self._send_halt(rid))
        try:
            while True:
                msg = await events.get()
                if "texts" in msg:
                    produced = int(msg["n"])
                    yield TextDelta.batch(msg["texts"], produced)
                    continue
                ended = True
                if "stats" in msg:
                    yield self._stats(msg["stats"], halt)
                    return
                if EXIT in msg and halt.halted:
                    # Halted (a forced unload, shutdown) and the worker was stopped before it
                    # could report: the generation was cancelled, not broken.
                    yield self._stats(self._halted_stats(produced, started), halt)
                    return
                raise generation_error(str(msg.get("error") or msg.get(EXIT)), request.constraint)
        finally:
            remove()
            if not ended:
                # Whoever stopped listening (a cancelled task, a closed stream) stops the token
                # loop, and the model is handed back only once the worker has let go of it.
                halt.halt("cancelled")
                self._send_halt(rid)
                await self._wait_end(events)
            self.worker.close_stream(rid)

    def _send_halt(self, rid: int) -> None:
        if self.worker.alive:
            self.worker.send({"op": "halt", "id": rid})

    @staticmethod
    async def _wait_end(events: asyncio.Queue[dict[str, Any]]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HALT_GRACE_S):
                while True:
                    msg = await events.get()
                    if "texts" not in msg:
                        return

    @staticmethod
    def _halted_stats(produced: int, started: float) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "prompt_tokens": 0,
            "completion_tokens": produced,
            "started": started,
            "first_token": None,
            "finished": now,
            "finish_reason": "halted",
        }

    @staticmethod
    def _stats(s: dict[str, Any], halt: HaltFlag) -> RuntimeStats:
        finish = s["finish_reason"]
        if finish == "halted":
            finish = "stop" if halt.reason == "stop" else "cancelled"
        return RuntimeStats(
            prompt_tokens=int(s["prompt_tokens"]),
            completion_tokens=int(s["completion_tokens"]),
            started=float(s["started"]),
            first_token=None if s["first_token"] is None else float(s["first_token"]),
            finished=float(s["finished"]),
            finish_reason=cast(FinishReason, finish),
            cached_tokens=int(s.get("cached_tokens", 0)),
            accepted_prediction_tokens=int(s.get("accepted_prediction_tokens", 0)),
            rejected_prediction_tokens=int(s.get("rejected_prediction_tokens", 0)),
        )

    async def close(self) -> None:
        # Generations halted just before (a forced unload) end within a token: let them report
        # their stats before the process goes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.worker.streams_closed()
        await self.worker.close()


class OnnxGenaiRuntime:
    name = "onnx-genai"
    capabilities = RuntimeCapabilities(
        streaming=True, tools=True, json_schema=True, fim=False, devices=("cpu", "cuda")
    )

    def __init__(self, python: str | None = None) -> None:
        # The worker's interpreter: the engine's own unless configured (it needs onnxruntime-genai).
        self.python = python or sys.executable

    def unavailable_reason(self, variant: ModelVariant) -> str | None:
        if importlib.util.find_spec("onnxruntime_genai") is None:
            return "ONNX Runtime GenAI is not installed (pip install onnxruntime-genai)."
        if variant.device == "cuda":
            from engine.hardware import execution_providers

            if "CUDAExecutionProvider" not in execution_providers():
                return (
                    "This variant needs ONNX Runtime GenAI's CUDA build "
                    "(pip install onnxruntime-genai-cuda) and an NVIDIA GPU."
                )
        return None

    async def load(
        self,
        variant: ModelVariant,
        folder: Path,
        *,
        threads: int | None,
        progress: ProgressCallback,
    ) -> OnnxGenaiInstance:
        if not (folder / "genai_config.json").is_file():
            raise LoadFailed(
                f"{folder} is not an ONNX Runtime GenAI model folder (no genai_config.json).",
                hint="Re-download the model (`ingot model download`) or compile it.",
            )
        if importlib.util.find_spec("onnxruntime_genai") is None:
            raise RuntimeUnavailable(
                "ONNX Runtime GenAI is not installed in the engine's Python.",
                hint="pip install onnxruntime-genai (or onnxruntime-genai-cuda for NVIDIA GPUs).",
            )
        slots = concurrent_sequences(variant, kv_bytes_per_token(variant, folder))
        worker, info, memory = await start_model_worker(
            [self.python, "-m", "engine.runtimes.onnx_worker"],
            model_id=variant.id,
            folder=folder,
            runtime="ONNX Runtime GenAI",
            hint="Verify the cache (`ingot cache verify`) or re-download the model.",
            progress=progress,
            device=variant.device,
            threads=threads or os.cpu_count() or 1,
            rows=slots,
        )
        return OnnxGenaiInstance(variant, worker, int(info["contextLength"]), memory, slots)
