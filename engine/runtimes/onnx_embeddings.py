"""The ONNX Runtime embedding runtime: each loaded encoder runs in its own worker process
(embedding_worker.py); the engine side sends inputs and halts and gets vectors back."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import sys
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from engine.catalog.variant import ModelVariant
from engine.errors import (
    ContextTooLong,
    GenerationFailed,
    InvalidRequest,
    LoadFailed,
    RuntimeUnavailable,
)
from engine.generation import GenerationEvent, GenerationRequest
from engine.progress import ProgressCallback
from engine.runtimes.base import EmbedOutput, HaltFlag, RuntimeCapabilities
from engine.runtimes.model_worker import start_model_worker
from engine.runtimes.worker_process import WorkerFailed, WorkerProcess
from engine.selector import not_a_chat_model

REQUIRED_MODULES = {"onnxruntime": "onnxruntime", "tokenizers": "tokenizers", "numpy": "numpy"}
MODEL_FILES = ("model.onnx", "tokenizer.json", "embedding_config.json")


class OnnxEmbeddingInstance:
    def __init__(
        self, variant: ModelVariant, worker: WorkerProcess, info: dict[str, Any], memory: int
    ) -> None:
        self.variant_id = variant.id
        self.device: str = variant.device
        self.context_length = int(info["contextLength"])
        self.dimensions = int(info["dimensions"])
        self.memory_bytes = memory
        self.worker = worker
        # One batch at a time: requests queue in the loader's scheduler.
        self.concurrency = 1

    def on_exit(self, callback: Callable[[str], None]) -> None:
        self.worker.on_exit(callback)

    def describe(self) -> dict[str, Any]:
        return {"pid": self.worker.pid, "dimensions": self.dimensions}

    async def runtime_metrics(self) -> dict[str, float]:
        return {}

    async def count_tokens(self, text: str) -> int:
        try:
            return int(await self.worker.call("count", text=text))
        except WorkerFailed as e:
            raise GenerationFailed(e.message) from e

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        raise not_a_chat_model(self.variant_id)

    async def generate(
        self, request: GenerationRequest, halt: HaltFlag
    ) -> AsyncGenerator[GenerationEvent, None]:
        raise not_a_chat_model(self.variant_id)
        yield  # pragma: no cover  (makes this an async generator, as the seam wants)

    async def embed(
        self,
        *,
        texts: list[str] | None,
        tokens: list[list[int]] | None,
        truncate: bool,
        halt: HaltFlag,
    ) -> EmbedOutput:
        """Vectors for `texts` or `tokens`; a too-long input (unless `truncate`) or a token id
        outside the vocabulary is a clear error naming the input."""
        rid, replies = self.worker.open_stream()
        try:
            self.worker.send(
                {"op": "embed", "id": rid, "texts": texts, "tokens": tokens, "truncate": truncate}
            )
            remove = halt.on_halt(lambda _: self._send_halt(rid))
            try:
                msg = await replies.get()
            except BaseException:
                # Cancelled while the batch runs: stop it between batches.
                self._send_halt(rid)
                raise
            finally:
                remove()
        except WorkerFailed as e:
            raise GenerationFailed(e.message) from e
        finally:
            self.worker.close_stream(rid)
        if "result" not in msg:
            raise GenerationFailed(str(msg.get("error") or msg.get("exit")))
        return self._output(msg["result"])

    def _output(self, result: dict[str, Any]) -> EmbedOutput:
        if (long := result.get("tooLong")) is not None:
            raise ContextTooLong(
                f"Input {long['index']} is {long['tokens']} tokens; {self.variant_id} embeds at "
                f"most {self.context_length} tokens per input.",
                hint="Split the text into smaller chunks, or send `truncate: true` to embed only "
                "its first tokens.",
                prompt_tokens=int(long["tokens"]),
                context_length=self.context_length,
                index=int(long["index"]),
                param="input",
            )
        if (bad := result.get("badToken")) is not None:
            raise InvalidRequest(
                f"Input {bad['index']} holds the token id {bad['token']}, which is not in "
                f"{self.variant_id}'s vocabulary.",
                hint="Token arrays must hold ids of this model's own tokenizer; send text instead.",
                index=int(bad["index"]),
                param="input",
            )
        vectors = tuple(base64.b64decode(v) for v in result["vectors"])
        return EmbedOutput(vectors, tuple(int(n) for n in result["tokens"]), self.dimensions)

    def _send_halt(self, rid: int) -> None:
        if self.worker.alive:
            with contextlib.suppress(WorkerFailed):
                self.worker.send({"op": "halt", "id": rid})

    async def close(self) -> None:
        await self.worker.close()


class OnnxEmbeddingRuntime:
    name = "onnxruntime"
    capabilities = RuntimeCapabilities(
        streaming=False, tools=False, json_schema=False, fim=False, devices=("cpu",)
    )

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def unavailable_reason(self, variant: ModelVariant) -> str | None:
        missing = [
            pkg for mod, pkg in REQUIRED_MODULES.items() if not importlib.util.find_spec(mod)
        ]
        if missing:
            return f"embedding models need {', '.join(missing)} (pip install {' '.join(missing)})."
        if variant.device != "cpu":
            return "Ingot runs embedding models on the CPU only."
        return None

    async def load(
        self,
        variant: ModelVariant,
        folder: Path,
        *,
        threads: int | None,
        progress: ProgressCallback,
    ) -> OnnxEmbeddingInstance:
        missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
        if missing:
            raise LoadFailed(
                f"{folder} is not an Ingot embedding model folder (missing {', '.join(missing)}).",
                hint="Download the model again (`ingot model download`).",
            )
        why = self.unavailable_reason(variant)
        if why:
            raise RuntimeUnavailable(f"{variant.id} cannot run here: {why}", model=variant.id)
        worker, info, memory = await start_model_worker(
            [self.python, "-m", "engine.runtimes.embedding_worker"],
            model_id=variant.id,
            folder=folder,
            runtime="ONNX Runtime",
            hint="Verify the cache (`ingot cache verify`) or download the model again.",
            progress=progress,
            threads=threads or os.cpu_count() or 1,
        )
        return OnnxEmbeddingInstance(variant, worker, info, memory)
