"""RuntimeSelector: the variant's framework picks the runtime; says why one cannot run here."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.catalog.variant import ModelVariant
from engine.errors import RuntimeUnavailable
from engine.runtimes.base import Runtime


@runtime_checkable
class BatchingRuntime(Protocol):
    """A runtime that serves many requests on one model at once (vLLM's continuous batching)."""

    def concurrency(self, variant: ModelVariant) -> int: ...


class RuntimeSelector:
    def __init__(self, runtimes: dict[str, Runtime]) -> None:
        self.runtimes = runtimes

    def unavailable_reason(self, v: ModelVariant) -> str | None:
        if v.runtime not in self.runtimes:
            return f"the {v.runtime} runtime is not installed in this engine"
        return self.runtimes[v.runtime].unavailable_reason(v)

    def for_variant(self, v: ModelVariant) -> Runtime:
        why = self.unavailable_reason(v)
        if why:
            raise RuntimeUnavailable(f"{v.id} cannot run here: {why}.", model=v.id)
        return self.runtimes[v.runtime]

    def concurrency_for(self, v: ModelVariant) -> int:
        """How many requests the loader's scheduler lets run on `v` at once (1 unless its
        runtime batches)."""
        rt = self.runtimes.get(v.runtime)
        return max(1, rt.concurrency(v)) if isinstance(rt, BatchingRuntime) else 1
