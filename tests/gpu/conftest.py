"""GPU tests: marked `gpu` and skipped unless NVML sees an NVIDIA GPU and vLLM's CUDA build is set up."""

from __future__ import annotations

import pytest

from engine.hardware import probe_gpus


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpus, why = probe_gpus()
    for item in items:
        if "tests/gpu/" not in str(item.path).replace("\\", "/"):
            continue
        item.add_marker(pytest.mark.gpu)
        if not gpus:
            item.add_marker(pytest.mark.skip(reason=f"needs an NVIDIA GPU ({why or 'none found'})"))
