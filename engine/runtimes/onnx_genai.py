"""The ONNX Runtime GenAI runtime: in-process, token loop in a worker thread feeding asyncio."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import psutil

from engine.catalog.variant import ModelVariant
from engine.errors import GenerationFailed, LoadFailed, RuntimeUnavailable
from engine.generation import GenerationEvent, GenerationRequest, RuntimeStats, TextDelta
from engine.progress import Progress, ProgressCallback
from engine.runtimes.base import HaltFlag, RuntimeCapabilities

log = logging.getLogger(__name__)

_DONE = object()


def _og() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise RuntimeUnavailable(
            "ONNX Runtime GenAI is not installed in the engine's Python.",
            hint="pip install onnxruntime-genai (or onnxruntime-genai-cuda for NVIDIA GPUs).",
        ) from e
    return og


class OnnxGenaiInstance:
    def __init__(
        self,
        variant_id: str,
        folder: Path,
        model: Any,
        tokenizer: Any,
        memory: int,
        device: str,
        max_output_tokens: int = 2048,
    ) -> None:
        self.variant_id = variant_id
        self.max_output_tokens = max_output_tokens
        self.folder = folder
        self.device = device
        self._model = model
        self._tokenizer = tokenizer
        self.memory_bytes = memory
        cfg = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        self.context_length = int(cfg["model"]["context_length"])
        self._eos = set(int(t) for t in tokenizer.eos_token_ids)
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text))

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str(
            self._tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        )

    def _search_options(self, request: GenerationRequest, max_length: int) -> dict[str, Any]:
        p = request.params
        opts: dict[str, Any] = {"max_length": max_length}
        greedy = p.temperature is not None and p.temperature <= 0
        if p.temperature is not None and not greedy:
            opts["temperature"] = float(p.temperature)
        if p.top_p is not None:
            opts["top_p"] = float(p.top_p)
        if p.top_k is not None:
            opts["top_k"] = int(p.top_k)
        if p.repetition_penalty is not None:
            opts["repetition_penalty"] = float(p.repetition_penalty)
        if p.seed is not None:
            opts["random_seed"] = int(p.seed)
        opts["do_sample"] = not greedy and (
            p.temperature is not None or p.top_p is not None or p.top_k is not None
        )
        return opts

    def _run(
        self,
        request: GenerationRequest,
        tokens: list[int],
        max_new: int,
        halt: HaltFlag,
        emit: Any,
    ) -> None:
        og = _og()
        started = time.monotonic()
        first: float | None = None
        produced = 0
        finish = "length"
        try:
            params = og.GeneratorParams(self._model)
            params.set_search_options(**self._search_options(request, len(tokens) + max_new))
            if request.constraint is not None:
                params.set_guidance(request.constraint.kind, request.constraint.text)
            gen = og.Generator(self._model, params)
            stream = self._tokenizer.create_stream()
            gen.append_tokens(tokens)
            while not halt.halted:
                if gen.is_done():
                    break
                gen.generate_next_token()
                tok = int(gen.get_next_tokens()[0])
                if first is None:
                    first = time.monotonic()
                if tok in self._eos:
                    finish = "stop"
                    break
                produced += 1
                emit(TextDelta(stream.decode(tok), produced))
                if produced >= max_new:
                    finish = "length"
                    break
            if halt.halted:
                finish = "stop" if halt.reason == "stop" else "cancelled"
            del gen
        except Exception as e:  # the runtime's own errors, surfaced as a clean engine error
            emit(GenerationFailed(f"Generation failed in ONNX Runtime GenAI: {e}"))
            return
        emit(
            RuntimeStats(
                prompt_tokens=len(tokens),
                completion_tokens=produced,
                started=started,
                first_token=first,
                finished=time.monotonic(),
                finish_reason=finish,  # type: ignore[arg-type]
            )
        )

    async def generate(
        self, request: GenerationRequest, halt: HaltFlag
    ) -> AsyncGenerator[GenerationEvent, None]:
        loop = asyncio.get_running_loop()
        tokens = [int(t) for t in self._tokenizer.encode(request.prompt)]
        # Without max_tokens, stop at the model's output limit rather than filling the whole
        # context: ORT GenAI sizes its shared KV buffer by max_length.
        max_new = request.params.max_tokens or self.max_output_tokens
        max_new = max(1, min(max_new, self.context_length - len(tokens)))
        queue: asyncio.Queue[object] = asyncio.Queue()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._run(request, tokens, max_new, halt, emit)
            finally:
                emit(_DONE)

        thread = threading.Thread(target=work, name=f"ingot-gen-{self.variant_id}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, Exception):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            # Whoever stops listening (a cancelled task, a closed stream) stops the token loop.
            halt.halt("cancelled")
            await asyncio.to_thread(thread.join)

    async def close(self) -> None:
        self._tokenizer = None
        self._model = None


class OnnxGenaiRuntime:
    name = "onnx-genai"
    capabilities = RuntimeCapabilities(
        streaming=True, tools=True, json_schema=True, fim=False, devices=("cpu", "cuda")
    )

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
        progress(Progress("load", f"Loading {variant.id}", 0.0))
        og = _og()
        n_threads = threads or os.cpu_count() or 1

        def do_load() -> OnnxGenaiInstance:
            proc = psutil.Process()
            before = proc.memory_info().rss
            cfg = og.Config(str(folder))
            # The provider follows the variant, not whatever genai_config.json happens to name.
            cfg.clear_providers()
            if variant.device == "cuda":
                cfg.append_provider("cuda")
            # Thread count is a session option; overlay it rather than editing the model's files.
            cfg.overlay(
                json.dumps(
                    {"model": {"decoder": {"session_options": {"intra_op_num_threads": n_threads}}}}
                )
            )
            model = og.Model(cfg)
            tokenizer = og.Tokenizer(model)
            used = max(0, proc.memory_info().rss - before)
            return OnnxGenaiInstance(
                variant.id,
                folder,
                model,
                tokenizer,
                used,
                variant.device,
                variant.max_output_tokens,
            )

        try:
            instance = await asyncio.to_thread(do_load)
        except LoadFailed:
            raise
        except Exception as e:
            raise LoadFailed(
                f"ONNX Runtime GenAI could not load {variant.id} from {folder}: {e}",
                hint="Verify the cache (`ingot cache verify`) or re-download the model.",
            ) from e
        progress(Progress("load", f"Loaded {variant.id}", 1.0))
        return instance
