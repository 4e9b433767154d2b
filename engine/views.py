"""Read models the façade returns: a variant with its cache, load and fit state; engine status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.catalog.fit import FitVerdict
from engine.catalog.variant import ModelVariant


@dataclass(frozen=True)
class ModelView:
    variant: ModelVariant
    cached: bool
    path: Path | None
    loaded: bool
    loading: bool
    fit: FitVerdict
    runtime_unavailable: str | None
    ttl_s: float | None = None
    expires_in_s: float | None = None
    memory_bytes: int | None = None
    active_requests: int = 0
    queued_requests: int = 0
    registered: bool = False
    # The loaded instance's describe(): its process, vLLM's plan, the last runtime metrics.
    runtime_info: dict[str, Any] | None = None

    @property
    def offered(self) -> bool:
        """Shown by default: the hardware can run it (it may still not fit right now)."""
        return self.fit.runnable


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    models: int
    size_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class EngineStatus:
    version: str
    pid: int
    home: Path
    cache_path: Path
    started_at: float
    loaded: tuple[ModelView, ...]
    active_requests: int
    queued_requests: int
    memory_budget: int
    threads: int | None
