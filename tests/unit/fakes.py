"""Fakes for unit tests only: a controllable clock and a scripted runtime."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from engine.catalog.variant import ModelSource, ModelVariant
from engine.generation import GenerationEvent, GenerationRequest, RuntimeStats, TextDelta
from engine.progress import ProgressCallback
from engine.runtimes.base import HaltFlag, RuntimeCapabilities


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    def advance(self, s: float) -> None:
        self.now += s


class FakeInstance:
    def __init__(self, variant_id: str, words: list[str], delay: float = 0.0) -> None:
        self.variant_id = variant_id
        self.context_length = 64
        self.memory_bytes = 1000
        self.device = "cpu"
        self.concurrency = 1
        self.words = words
        self.delay = delay
        self.closed = False
        self.generated = 0
        self.exit_callbacks: list[Callable[[str], None]] = []
        self.prompts: list[str] = []

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return " ".join(f"{m['role']}: {m['content']}" for m in messages)

    def describe(self) -> dict[str, Any]:
        return {"fake": True}

    async def runtime_metrics(self) -> dict[str, float]:
        return {"fake_metric": 1.0}

    def on_exit(self, callback: Callable[[str], None]) -> None:
        self.exit_callbacks.append(callback)

    def crash(self, reason: str = "crashed") -> None:
        for cb in self.exit_callbacks:
            cb(reason)

    async def generate(
        self, request: GenerationRequest, halt: HaltFlag
    ) -> AsyncGenerator[GenerationEvent, None]:
        self.prompts.append(request.prompt)
        started = time.monotonic()
        first = None
        n = 0
        finish = "stop"
        limit = request.params.max_tokens or len(self.words)
        for w in self.words:
            if halt.halted:
                finish = "stop" if halt.reason == "stop" else "cancelled"
                break
            if n >= limit:
                finish = "length"
                break
            await asyncio.sleep(self.delay)
            n += 1
            self.generated += 1
            first = first or time.monotonic()
            yield TextDelta(w, n)
        yield RuntimeStats(len(request.prompt.split()), n, started, first, time.monotonic(), finish)  # type: ignore[arg-type]

    async def close(self) -> None:
        self.closed = True


class FakeRuntime:
    name = "onnx-genai"
    capabilities = RuntimeCapabilities()

    def __init__(self, words: list[str] | None = None, delay: float = 0.0) -> None:
        self.words = words or ["Hello", " there", "!"]
        self.delay = delay
        self.loads = 0
        self.instances: list[FakeInstance] = []
        self.load_delay = 0.0

    def unavailable_reason(self, variant: ModelVariant) -> str | None:
        return None

    async def load(
        self,
        variant: ModelVariant,
        folder: Path,
        *,
        threads: int | None,
        progress: ProgressCallback,
    ) -> FakeInstance:
        self.loads += 1
        await asyncio.sleep(self.load_delay)
        inst = FakeInstance(variant.id, self.words, self.delay)
        self.instances.append(inst)
        return inst


def variant(name: str = "tiny", alias: str = "tiny", size: int = 1000, **kw: Any) -> ModelVariant:
    base: dict[str, Any] = {
        "name": name,
        "version": 1,
        "alias": alias,
        "display_name": name,
        "publisher": "test",
        "device": "cpu",
        "framework": "onnx",
        "source": ModelSource(kind="huggingface", repo=f"test/{name}"),
        "size_bytes": size,
        "context_length": 64,
        "license": "MIT",
    }
    base.update(kw)
    return ModelVariant(**base)
