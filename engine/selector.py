"""RuntimeSelector: the variant's framework picks the runtime; says why one cannot run here."""

from __future__ import annotations

from engine.catalog.variant import ModelVariant
from engine.errors import RuntimeUnavailable
from engine.runtimes.base import Runtime


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
