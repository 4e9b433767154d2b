"""Catalog resolution and fit, and the cache's manifest/commit/verify/move rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cache import ModelCache, safe_dirname
from engine.catalog.catalog import ModelCatalog, RegistrationStore
from engine.catalog.fit import check_fit
from engine.catalog.variant import ModelSource
from engine.errors import CacheError, InvalidRequest, ModelNotFound
from engine.hardware import GpuInfo, HardwareProfile
from tests.unit.fakes import variant

GIB = 1024**3
CPU_ONLY = HardwareProfile("cpu", 2, 2, 24 * GIB, 20 * GIB)
WITH_GPU = HardwareProfile(
    "cpu", 2, 2, 24 * GIB, 20 * GIB, gpus=(GpuInfo(0, "H100", 80 * GIB, 79 * GIB),)
)


def catalog() -> ModelCatalog:
    return ModelCatalog(
        [
            variant("m-cpu", "m", device="cpu", version=1),
            variant("m-cpu", "m", device="cpu", version=2),
            variant("m-cuda", "m", device="cuda"),
            variant("m-vllm", "m", device="cuda", framework="vllm"),
        ]
    )


def resolve(c: ModelCatalog, name: str, hw: HardwareProfile, cached: set[str] = set()) -> str:  # noqa: B006
    return c.resolve(
        name,
        hardware=hw,
        is_cached=lambda v: v.id in cached,
        runtime_available=lambda v: True,
        offered=lambda v: check_fit(v, hw).runnable,
    ).id


def test_alias_resolution_follows_foundry_rules() -> None:
    c = catalog()
    assert resolve(c, "m", CPU_ONLY) == "m-cpu:2"  # newest CPU version; CUDA not runnable
    assert resolve(c, "m", WITH_GPU) == "m-cuda:1"  # CUDA before CPU, ONNX before vLLM
    assert resolve(c, "m", WITH_GPU, {"m-cpu:1"}) == "m-cpu:1"  # cached wins
    assert resolve(c, "m-cpu:1", WITH_GPU) == "m-cpu:1"  # exact id wins
    assert resolve(c, "m-cpu", CPU_ONLY) == "m-cpu:2"


def test_unknown_model_suggests_close_names_and_bad_names_are_refused() -> None:
    c = catalog()
    with pytest.raises(ModelNotFound) as e:
        resolve(c, "m-cpux", CPU_ONLY)
    assert "m-cpu" in str(e.value)
    for bad in ["../etc/passwd", "", ".hidden", "a\x00b", "x" * 300]:
        with pytest.raises(InvalidRequest):
            resolve(c, bad, CPU_ONLY)


def test_fit_verdicts_say_why() -> None:
    big = variant("big", "big", size=30 * GIB)
    verdict = check_fit(big, CPU_ONLY)
    assert not verdict.fits and verdict.runnable and "GiB of RAM" in verdict.reason
    gpu = variant("g", "g", device="cuda")
    assert not check_fit(gpu, CPU_ONLY).runnable
    assert check_fit(gpu, WITH_GPU).fits
    opt = variant("o", "o", opt_in="vllm-cpu")
    assert not check_fit(opt, CPU_ONLY).runnable
    assert check_fit(opt, CPU_ONLY, frozenset({"vllm-cpu"})).runnable


def test_registrations_persist(tmp_path: Path) -> None:
    store = RegistrationStore(tmp_path / "registered.json")
    c = ModelCatalog([], registrations=store)
    mine = variant("mine", "mine", source=ModelSource(kind="local", path=str(tmp_path)))
    store.add(mine)
    assert ModelCatalog([], registrations=store).get("mine:1") == mine
    assert c.is_registered("mine:1")
    assert store.remove("mine:1") and c.get("mine:1") is None


def test_cache_commit_verify_remove_and_move(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    staging = cache.staging_for("m:1")
    staging.mkdir(parents=True)
    (staging / "weights.bin").write_bytes(b"x" * 100)
    assert not cache.is_cached("m:1")  # a partial folder is never cached
    entry = cache.commit(
        staging,
        cache.new_manifest(
            "m:1", staging, source="t", runtime="onnx-genai", framework="onnx", device="cpu"
        ),
    )
    assert cache.is_cached("m:1") and entry.manifest.size_bytes == 100
    assert cache.verify() == {"m:1": []}
    (entry.path / "weights.bin").write_bytes(b"y" * 100)
    assert cache.verify() == {"m:1": ["weights.bin: sha256 mismatch"]}
    moved = cache.move_to(tmp_path / "elsewhere")
    assert moved.is_cached("m:1") and not cache.is_cached("m:1")
    with pytest.raises(CacheError):
        moved.move_to(moved.root / "inside")
    assert moved.remove("m:1") and not moved.is_cached("m:1")
    assert safe_dirname("a/b:1") == "a__b--1"
