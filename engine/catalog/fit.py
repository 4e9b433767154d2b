"""Does a variant fit this machine? Memory for weights + KV cache at its default context vs. what is free."""

from __future__ import annotations

from dataclasses import dataclass

from engine.catalog.variant import ModelVariant
from engine.hardware import HardwareProfile

# Activations, runtime libraries and allocator slack on top of weights + KV cache.
RUNTIME_OVERHEAD_BYTES = 200 * 1024 * 1024
GIB = 1024**3


@dataclass(frozen=True)
class FitVerdict:
    fits: bool
    memory_needed: int
    memory_available: int
    reason: str
    # False when the hardware cannot run the variant at all (e.g. a CUDA variant with no GPU):
    # such variants are not offered.
    runnable: bool = True


def memory_needed(v: ModelVariant, context: int | None = None) -> int:
    if v.source.kind == "remote":
        return 0  # it runs on the deployment's machines, not in this one's memory
    kv = v.kv.bytes_per_token() * (context or v.planned_context) if v.kv else 0
    return int(v.size_bytes * 1.05) + kv + RUNTIME_OVERHEAD_BYTES


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def check_fit(
    v: ModelVariant, hw: HardwareProfile, opt_ins: frozenset[str] = frozenset()
) -> FitVerdict:
    need = memory_needed(v)
    if v.source.kind == "remote":
        return FitVerdict(True, 0, 0, "runs on a remote server")
    if v.opt_in and v.opt_in not in opt_ins:
        return FitVerdict(
            False,
            need,
            0,
            f"needs the opt-in '{v.opt_in}' (set INGOT_OPT_IN={v.opt_in} to offer it)",
            runnable=False,
        )
    if v.device == "cuda":
        if not hw.gpus:
            return FitVerdict(False, need, 0, "needs an NVIDIA GPU; none found", runnable=False)
        best = max(g.memory_free for g in hw.gpus)
        if need > best:
            return FitVerdict(
                False,
                need,
                best,
                f"needs {_gib(need)} of GPU memory at {v.planned_context} tokens of context; "
                f"{_gib(best)} free",
            )
        return FitVerdict(
            True, need, best, f"fits in GPU memory ({_gib(need)} of {_gib(best)} free)"
        )
    avail = hw.ram_available
    if need > avail:
        return FitVerdict(
            False,
            need,
            avail,
            f"needs {_gib(need)} of RAM at {v.planned_context} tokens of context; {_gib(avail)} free",
        )
    return FitVerdict(True, need, avail, f"fits in RAM ({_gib(need)} of {_gib(avail)} free)")
