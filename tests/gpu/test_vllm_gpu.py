"""vLLM on a real NVIDIA GPU: the planner's choices, a larger model end to end, and throughput under
concurrency. Needs vLLM's CUDA build (INGOT_VLLM_PYTHON, or scripts/setup_vllm.sh with
INGOT_VLLM_PACKAGE=vllm==<version>) and, for the model tests, a Hugging Face folder of a model
larger than the default one in INGOT_GPU_TEST_MODEL (e.g. Qwen2.5-1.5B-Instruct); the default
model's folder is used when that is unset.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.bootstrap import build_engine
from engine.catalog.catalog import ModelCatalog
from engine.config import EngineConfig
from engine.errors import ModelDoesNotFit
from engine.generation import SamplingParams
from engine.hardware import probe_gpus, probe_hardware
from engine.requests import ChatRequest, GenerationResult
from engine.runtimes.vllm import VllmRuntime
from engine.runtimes.vllm_instance import VllmInstance
from engine.runtimes.vllm_plan import CUDA_OVERHEAD, plan_vllm
from engine.service import EngineService

GIB = 1024**3


def cuda_runtime() -> VllmRuntime:
    rt = VllmRuntime(os.environ.get("INGOT_VLLM_PYTHON"))
    if rt.install().build != "cuda":
        pytest.skip(
            f"{rt.python} has no CUDA build of vLLM: set INGOT_VLLM_PYTHON, or run "
            "INGOT_VLLM_PACKAGE=vllm==<version> scripts/setup_vllm.sh"
        )
    return rt


def test_the_planner_fits_every_catalog_vllm_variant_to_this_gpu_or_says_why() -> None:
    hw = probe_hardware()
    best = max(hw.gpus, key=lambda g: g.memory_free)
    refusals: list[str] = []
    for v in ModelCatalog.default().all():
        if v.framework != "vllm" or v.device != "cuda":
            continue
        try:
            plan = plan_vllm(v, hw, "cuda")
        except ModelDoesNotFit as e:
            refusals.append(e.message)
            continue
        assert plan.gpu_memory_utilization is not None
        assert 0 < plan.gpu_memory_utilization * best.memory_total <= best.memory_free
        assert plan.weights_bytes + plan.kv_cache_bytes + CUDA_OVERHEAD <= plan.memory_bytes
        assert 0 < plan.max_model_len <= v.context_length and plan.max_num_seqs >= 1
    # A refusal says the numbers: what it needs and what the GPU has free.
    assert all("GiB" in m and "free" in m for m in refusals), refusals


@pytest.fixture(scope="module")
async def gpu_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EngineService]:
    rt = cuda_runtime()
    folder = os.environ.get("INGOT_GPU_TEST_MODEL")
    if folder is None:
        from tests.support.models import build_default_model
        from tests.support.paths import TEST_BUILD_ROOT

        folder = str(build_default_model(TEST_BUILD_ROOT)[0])
    home = tmp_path_factory.mktemp("vllm-gpu") / "home"
    config = EngineConfig(home=home, vllm_python=rt.python)
    svc = build_engine(config)
    await svc.start()
    await svc.register(Path(folder), runtime="vllm", name="gpu-test-model")
    try:
        yield svc
    finally:
        await svc.close()


async def chat(svc: EngineService, text: str, n: int) -> GenerationResult:
    req = ChatRequest(
        model="gpu-test-model",
        messages=[{"role": "user", "content": text}],
        params=SamplingParams(max_tokens=n, temperature=0),
    )
    result = None
    async for ev in svc.chat(req):
        if isinstance(ev, GenerationResult):
            result = ev
    assert result is not None
    return result


async def test_a_larger_model_loads_on_the_gpu_with_a_plan_and_streams(
    gpu_engine: EngineService,
) -> None:
    view = await gpu_engine.load("gpu-test-model", ttl_s=-1)
    assert view.loaded
    entry = gpu_engine.loader.get_loaded(view.variant.id)
    assert entry is not None
    inst = entry.instance
    assert isinstance(inst, VllmInstance) and inst.plan is not None
    assert inst.plan.device == "cuda" and inst.plan.gpu_memory_utilization
    assert entry.scheduler.concurrency == inst.plan.max_num_seqs > 1
    res = await chat(gpu_engine, "Say hello in one short sentence.", 24)
    assert res.text.strip() and res.record.runtime == "vllm" and res.record.device == "cuda"
    metrics = await inst.runtime_metrics()
    assert metrics["generation_tokens_total"] >= res.usage.completion_tokens


async def test_eight_streams_batch_to_several_times_one(gpu_engine: EngineService) -> None:
    await gpu_engine.load("gpu-test-model", ttl_s=-1)
    t0 = time.perf_counter()
    one = await chat(gpu_engine, "Write a long story about a lighthouse.", 256)
    single_tps = one.usage.completion_tokens / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    many = await asyncio.gather(
        *(chat(gpu_engine, f"Write a long story about lighthouse {i}.", 256) for i in range(8))
    )
    aggregate = sum(r.usage.completion_tokens for r in many) / (time.perf_counter() - t0)
    print(f"single {single_tps:.0f} tok/s, 8 streams {aggregate:.0f} tok/s")
    assert all(r.record.queue_ms < 100 for r in many)  # none waited for another's slot
    assert aggregate > 3 * single_tps


async def test_unload_gives_the_gpu_memory_back(gpu_engine: EngineService) -> None:
    await gpu_engine.load("gpu-test-model", ttl_s=-1)
    used_loaded = sum(g.memory_total - g.memory_free for g in probe_gpus()[0])
    assert await gpu_engine.unload("gpu-test-model", force=True)
    await asyncio.sleep(2)
    used_after = sum(g.memory_total - g.memory_free for g in probe_gpus()[0])
    assert used_loaded - used_after > GIB // 2
