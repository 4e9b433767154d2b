"""The Runtime seam: load a model folder into a ModelInstance that counts tokens and streams text."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    """Checked by the token loop on every token: set by cancellation or by a matched stop sequence."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def halt(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def halted(self) -> bool:
        return self._event.is_set()


class ModelInstance(Protocol):
    """A loaded model. `generate` must not block the event loop and must stop within one token of
    `halt.halt()`; its last event is a RuntimeStats."""

    variant_id: str
    context_length: int
    memory_bytes: int
    device: str

    def count_tokens(self, text: str) -> int: ...

    def render_chat(self, messages: list[dict[str, Any]]) -> str: ...

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
