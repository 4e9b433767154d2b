"""The Runtime seam: load a model folder into a ModelInstance that counts tokens and streams text."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from engine.catalog.variant import ModelVariant
from engine.generation import GenerationEvent, GenerationRequest
from engine.progress import ProgressCallback


@dataclass(frozen=True)
class RuntimeCapabilities:
    streaming: bool = True
    tools: bool = True
    json_schema: bool = True
    fim: bool = False
    devices: tuple[str, ...] = ("cpu",)


class HaltFlag:
    """Set by cancellation, an unload or a matched stop sequence. An in-process token loop checks
    it on every token; an out-of-process runtime subscribes with on_halt to forward it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self._callbacks: list[Callable[[str], None]] = []

    def halt(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()
            for cb in list(self._callbacks):
                cb(reason)

    def on_halt(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(reason)` when halted (now, if already); returns an unsubscribe."""
        if self._event.is_set():
            callback(self.reason)
            return lambda: None
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    @property
    def halted(self) -> bool:
        return self._event.is_set()


class ModelInstance(Protocol):
    """A loaded model. `generate` must not block the event loop and must stop within one token of
    `halt.halt()`; its last event is a RuntimeStats. Tokenizing and templating are async because
    the model may live in another process."""

    variant_id: str
    context_length: int
    memory_bytes: int
    device: str
    # How many generations it runs at once (the loader's per-model scheduler admits that many).
    concurrency: int

    async def count_tokens(self, text: str) -> int: ...

    async def render_chat(self, messages: list[dict[str, Any]]) -> str: ...

    def on_exit(self, callback: Callable[[str], None]) -> None:
        """Register `callback(reason)` for when the model dies on its own (its process crashed)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Runtime details for status views: its process, plan, and last runtime metrics."""
        ...

    async def runtime_metrics(self) -> dict[str, float]:
        """The runtime's own gauges and counters (vLLM's KV-cache use, waiting requests, ...);
        refreshed by the engine once per telemetry interval."""
        ...

    def generate(
        self, request: GenerationRequest, halt: HaltFlag
    ) -> AsyncGenerator[GenerationEvent, None]: ...

    async def close(self) -> None: ...


class Runtime(Protocol):
    name: str
    capabilities: RuntimeCapabilities

    def unavailable_reason(self, variant: ModelVariant) -> str | None:
        """None when this runtime can run the variant here; else why not (and how to fix it)."""
        ...

    async def load(
        self,
        variant: ModelVariant,
        folder: Path,
        *,
        threads: int | None,
        progress: ProgressCallback,
    ) -> ModelInstance: ...


@dataclass(frozen=True)
class EmbedOutput:
    """One vector per input (float32, little-endian bytes) and the tokens each input used."""

    vectors: tuple[bytes, ...]
    tokens: tuple[int, ...]
    dimensions: int


@runtime_checkable
class EmbeddingInstance(ModelInstance, Protocol):
    """A loaded embedding model: inputs are texts or token-id rows of its own vocabulary."""

    dimensions: int

    async def embed(
        self,
        *,
        texts: list[str] | None,
        tokens: list[list[int]] | None,
        truncate: bool,
        halt: HaltFlag,
    ) -> EmbedOutput: ...
