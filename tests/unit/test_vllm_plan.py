"""The vLLM planner and preferences: memory fraction, context and sequences from hardware and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.catalog.variant import KvShape
from engine.errors import InvalidRequest, ModelDoesNotFit
from engine.hardware import GpuInfo, HardwareProfile
from engine.runtimes.vllm_plan import GIB, VllmPreferences, plan_vllm
from engine.runtimes.vllm_prefs import load_preferences
from tests.unit.fakes import variant

SMOLLM_KV = KvShape(layers=30, kv_heads=3, head_dim=64, dtype_bytes=2)
QWEN15_KV = KvShape(layers=28, kv_heads=2, head_dim=128, dtype_bytes=2)
PHI35_KV = KvShape(layers=32, kv_heads=32, head_dim=96, dtype_bytes=2)


def hw(ram_free_gib: float = 20, gpus: tuple[tuple[float, float], ...] = ()) -> HardwareProfile:
    return HardwareProfile(
        cpu_model="test",
        cpu_cores_physical=2,
        cpu_cores_logical=2,
        ram_total=int(24 * GIB),
        ram_available=int(ram_free_gib * GIB),
        gpus=tuple(
            GpuInfo(i, f"GPU{i}", int(total * GIB), int(free * GIB))
            for i, (total, free) in enumerate(gpus)
        ),
    )


def test_cpu_plan_for_the_default_model_matches_what_ran_here() -> None:
    v = variant(
        "smollm-vllm", framework="vllm", size=541_619_399, context_length=8192, kv=SMOLLM_KV
    )
    plan = plan_vllm(v, hw(), "cpu")
    assert plan.device == "cpu" and plan.dtype == "float32" and plan.enforce_eager
    assert plan.kv_cache_space_gib == 1
    # float32 KV: 2 * 30 layers * 3 heads * 64 * 4 bytes = 46080 bytes per token.
    assert plan.kv_tokens == GIB // 46080
    assert plan.max_model_len == 8192 and plan.max_num_seqs == 16
    assert plan.args() == [
        "--dtype",
        "float32",
        "--max-model-len",
        "8192",
        "--max-num-seqs",
        "16",
        "--enforce-eager",
        "--scheduling-policy",
        "priority",
    ]
    assert plan.environment() == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert plan.gpu_memory_utilization is None and "CPU build" in plan.notes[0]


def test_cpu_plan_refuses_when_ram_is_short_and_says_the_numbers() -> None:
    v = variant("big", framework="vllm", size=8 * GIB, context_length=8192, kv=SMOLLM_KV)
    with pytest.raises(ModelDoesNotFit) as e:
        plan_vllm(v, hw(ram_free_gib=6), "cpu")
    assert "8.0 GiB" in e.value.message and "6.0 GiB" in e.value.message


def test_cuda_plan_on_a_roomy_gpu_takes_the_whole_context_and_many_sequences() -> None:
    v = variant(
        "qwen",
        framework="vllm",
        device="cuda",
        size=3_101_500_000,
        context_length=32768,
        kv=QWEN15_KV,
    )
    plan = plan_vllm(v, hw(gpus=((24, 23),)), "cuda", VllmPreferences(gpu_mode="dedicated"))
    assert plan.gpu_memory_utilization == 0.90
    assert plan.max_model_len == 32768 and plan.max_num_seqs == 256
    assert plan.gpu_index == 0 and plan.environment() == {"CUDA_VISIBLE_DEVICES": "0"}
    assert "--gpu-memory-utilization" in plan.args() and "--enforce-eager" not in plan.args()
    # Weights + runtime + KV fit in the fraction chosen.
    assert plan.weights_bytes + plan.kv_cache_bytes < plan.memory_bytes


def test_a_shared_gpu_gets_what_the_model_needs_not_the_card() -> None:
    """The default on a desktop card: a 135M model on a 141 GB GPU takes ~2 GiB, not 126 GiB."""
    v = variant(
        "smollm", framework="vllm", device="cuda", size=270_000_000, context_length=8192,
        kv=SMOLLM_KV,
    )  # fmt: skip
    plan = plan_vllm(v, hw(gpus=((141, 140),)), "cuda")
    assert plan.gpu_memory_utilization is not None and plan.gpu_memory_utilization <= 0.02
    assert plan.memory_bytes < 3 * GIB
    # Room for the planned context and 16 typical sequences at once.
    assert plan.max_model_len == 4096 and plan.max_num_seqs >= 16
    assert plan.kv_tokens is not None and plan.kv_tokens >= 16 * 1024
    assert any("shared GPU" in n and "dedicated" in n for n in plan.notes)
    dedicated = plan_vllm(v, hw(gpus=((141, 140),)), "cuda", VllmPreferences(gpu_mode="dedicated"))
    assert dedicated.gpu_memory_utilization == 0.90 and dedicated.max_model_len == 8192
    # A user who asks for a longer context on a shared card gets the memory for it.
    longer = plan_vllm(v, hw(gpus=((141, 140),)), "cuda", VllmPreferences(max_model_len=8192))
    assert longer.max_model_len == 8192 and longer.kv_tokens is not None
    assert longer.kv_tokens >= 16 * 1024 and longer.memory_bytes < 3 * GIB
    with pytest.raises(InvalidRequest):
        VllmPreferences.from_dict({"gpu_mode": "all"}, "vllm.json")


def test_cuda_plan_leaves_headroom_on_a_busy_gpu_and_caps_the_context() -> None:
    v = variant(
        "phi35",
        framework="vllm",
        device="cuda",
        size=7_644_000_000,
        context_length=131072,
        kv=PHI35_KV,
    )
    plan = plan_vllm(v, hw(gpus=((16, 12),)), "cuda", VllmPreferences(gpu_mode="dedicated"))
    # 12 GiB free of 16: at most (12 - 0.5) / 16 of the GPU.
    assert plan.gpu_memory_utilization == 0.71
    assert plan.kv_tokens is not None and plan.max_model_len <= plan.kv_tokens < 131072
    assert plan.max_model_len % 256 == 0
    assert any("context capped" in n for n in plan.notes)


def test_cuda_plan_picks_the_gpu_with_most_free_memory() -> None:
    v = variant(
        "qwen", framework="vllm", device="cuda", size=3 * GIB, context_length=32768, kv=QWEN15_KV
    )
    plan = plan_vllm(v, hw(gpus=((24, 2), (24, 20))), "cuda")
    assert plan.gpu_index == 1


def test_a_model_that_cannot_fit_the_gpu_is_refused_with_the_numbers() -> None:
    v = variant(
        "phi4",
        framework="vllm",
        device="cuda",
        size=7_690_000_000,
        context_length=131072,
        kv=PHI35_KV,
    )
    with pytest.raises(ModelDoesNotFit) as e:
        plan_vllm(v, hw(gpus=((8, 7.5),)), "cuda")
    msg = e.value.message
    assert "weights 7.2 GiB" in msg and "GPU 0 (GPU0)" in msg and "7.5 GiB free" in msg
    with pytest.raises(ModelDoesNotFit):
        plan_vllm(v, hw(), "cuda")  # no GPU at all


def test_preferences_override_the_plan_and_are_reported() -> None:
    v = variant(
        "qwen", framework="vllm", device="cuda", size=3 * GIB, context_length=32768, kv=QWEN15_KV
    )
    prefs = VllmPreferences(
        max_model_len=8192, max_num_seqs=12, gpu_memory_utilization=0.5, extra_args=("--x",)
    )
    plan = plan_vllm(v, hw(gpus=((24, 23),)), "cuda", prefs)
    assert (plan.max_model_len, plan.max_num_seqs, plan.gpu_memory_utilization) == (8192, 12, 0.5)
    assert set(plan.pinned) == {"max_model_len", "max_num_seqs", "gpu_memory_utilization"}
    assert plan.args()[-1] == "--x"


def test_preferences_that_cannot_work_are_refused_before_vllm_starts() -> None:
    v = variant(
        "qwen", framework="vllm", device="cuda", size=3 * GIB, context_length=32768, kv=QWEN15_KV
    )
    gpu = hw(gpus=((24, 10),))
    with pytest.raises(ModelDoesNotFit) as e:
        plan_vllm(v, gpu, "cuda", VllmPreferences(gpu_memory_utilization=0.9))
    assert "only 10.0 GiB of 24.0 GiB is free" in e.value.message
    with pytest.raises(InvalidRequest):
        plan_vllm(v, gpu, "cuda", VllmPreferences(max_model_len=65536))
    with pytest.raises(ModelDoesNotFit) as e:
        plan_vllm(v, gpu, "cuda", VllmPreferences(tensor_parallel_size=2))
    assert "2 GPUs" in e.value.message


def test_tensor_parallel_splits_weights_over_the_gpus() -> None:
    v = variant(
        "big", framework="vllm", device="cuda", size=20 * GIB, context_length=32768, kv=QWEN15_KV
    )
    two = hw(gpus=((16, 15), (16, 15)))
    with pytest.raises(ModelDoesNotFit):
        plan_vllm(v, two, "cuda")
    plan = plan_vllm(v, two, "cuda", VllmPreferences(tensor_parallel_size=2))
    assert plan.tensor_parallel_size == 2 and plan.weights_bytes == 10 * GIB
    assert (
        "--tensor-parallel-size" in plan.args() and "CUDA_VISIBLE_DEVICES" not in plan.environment()
    )


def test_preferences_come_from_the_catalog_then_the_users_file(tmp_path: Path) -> None:
    v = variant(
        "qwen",
        alias="qwen-alias",
        framework="vllm",
        extra={"vllm": {"max_num_seqs": 8, "max_model_len": 4096, "extra_args": ["--a"]}},
    )
    assert load_preferences(None, v).max_num_seqs == 8
    f = tmp_path / "vllm.json"
    f.write_text(
        json.dumps(
            {
                "defaults": {"max_num_seqs": 4, "env": {"A": "1"}},
                "models": {"qwen-alias": {"max_model_len": 2048, "extra_args": ["--b"]}},
            }
        )
    )
    prefs = load_preferences(f, v)
    assert (prefs.max_num_seqs, prefs.max_model_len) == (4, 2048)
    assert prefs.extra_args == ("--a", "--b") and prefs.env == {"A": "1"}
    f.write_text(json.dumps({"models": {"qwen:1": {"max_num_seq": 3}}}))
    with pytest.raises(InvalidRequest) as e:
        load_preferences(f, v)
    assert "max_num_seq" in e.value.message and "max_num_seqs" in (e.value.hint or "")


def test_model_info_says_why_the_plan_took_what_it_took() -> None:
    from engine.catalog.fit import FitVerdict
    from engine.views import ModelView
    from server.cli.model_cmd import info_fields
    from server.translate import model_info

    v = variant(
        "smollm", framework="vllm", device="cuda", size=270_000_000, context_length=8192,
        kv=SMOLLM_KV,
    )  # fmt: skip
    plan = plan_vllm(v, hw(gpus=((141, 140),)), "cuda")
    view = ModelView(
        variant=v,
        cached=True,
        path=None,
        loaded=True,
        loading=False,
        fit=FitVerdict(True, 1, 2, "fits"),
        runtime_unavailable=None,
        runtime_info={"plan": plan.to_dict()},
    )
    fields = dict(info_fields(model_info(view)))
    assert "shared GPU" in fields["vLLM plan"] and "using 0.02" in fields["vLLM plan"]
