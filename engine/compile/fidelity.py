"""Fidelity check: KL divergence of an ONNX model's next-token distributions from reference weights."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.compile.child import run_step
from engine.compile.reporting import StepReporter, run_as_child
from engine.compile.toolchain import child_env, require_modules
from engine.errors import CompileFailed
from engine.progress import CancelToken, ProgressCallback, no_progress

STEP = "fidelity check"
# What an exact import must reach (builder int4 measured 0.47 here, int8 0.0048, llama.cpp 0.0029).
KL_TARGET = 0.01
FIDELITY_MODULES = ("torch", "transformers", "safetensors", "onnxruntime_genai")

# A fixed text of about 300 tokens (SmolLM2's tokenizer): prose and a little code, as an editor sees.
DEFAULT_TEXT = """\
The lighthouse keeper woke before dawn, as he had every morning for thirty years. He climbed the \
spiral stairs, counting the steps out of habit, and checked the lamp, the lens and the clockwork \
that turned them. Outside, the sea was calm and grey, and a fishing boat was already heading out \
past the rocks. He wrote the time, the weather and the state of the light in the log book, then \
made a pot of strong tea and sat by the window to watch the sun come up over the water.

In the afternoon a letter arrived from the harbour office. The lighthouse would be automated next \
spring, it said, and his service would no longer be required. He read it twice, folded it neatly \
and put it in the drawer with the others. Then he went back to work, because the brass still \
needed polishing and the winter storms would not wait for anyone. That evening he lit the lamp \
at six o'clock, exactly as the tables said, and listened to the radio until the news was over.

def moving_average(values, window):
    \"\"\"Return the averages of each run of `window` consecutive values.\"\"\"
    if window <= 0:
        raise ValueError("window must be positive")
    total = sum(values[:window])
    averages = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        averages.append(total / window)
    return averages
"""


@dataclass(frozen=True)
class FidelityReport:
    """KL(reference || model) of next-token distributions, per position of a fixed text."""

    mean_kl: float
    median_kl: float
    max_kl: float
    top1_agreement: float  # share of positions where both put the same token first
    tokens: int
    seconds: float

    @property
    def meets_target(self) -> bool:
        return self.mean_kl <= KL_TARGET

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> FidelityReport:
        return cls(
            mean_kl=float(details["mean_kl"]),
            median_kl=float(details["median_kl"]),
            max_kl=float(details["max_kl"]),
            top1_agreement=float(details["top1_agreement"]),
            tokens=int(details["tokens"]),
            seconds=float(details["seconds"]),
        )


def measure_fidelity(
    onnx_dir: Path,
    reference_hf_dir: Path,
    *,
    text: str | None = None,
    python: str | None = None,
    threads: int | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> FidelityReport:
    """Mean KL divergence of `onnx_dir`'s next-token distributions from `reference_hf_dir`'s.

    The reference is a float32 Hugging Face folder (for an import: the dequantised GGUF from
    gguf_to_hf) run with torch; the ONNX model runs with onnxruntime-genai one token at a time,
    as it decodes. Both run in a child process of `python` (the compile toolchain's interpreter).
    """
    onnx_dir, reference_hf_dir = Path(onnx_dir).resolve(), Path(reference_hf_dir).resolve()
    python = python or sys.executable
    for folder, marker in ((onnx_dir, "genai_config.json"), (reference_hf_dir, "config.json")):
        if not (folder / marker).is_file():
            raise CompileFailed(
                f"The {STEP} cannot start: {folder} has no {marker}.",
                hint="Pass an ONNX Runtime GenAI folder and the float32 Hugging Face folder it "
                "was built from.",
            )
    require_modules(python, FIDELITY_MODULES, step=STEP)
    with tempfile.TemporaryDirectory(prefix="ingot-fidelity-") as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(text if text is not None else DEFAULT_TEXT, encoding="utf-8")
        argv = [python, "-m", "engine.compile.fidelity", "--onnx", str(onnx_dir)]
        argv += ["--reference", str(reference_hf_dir), "--text-file", str(text_file)]
        if threads:
            argv += ["--threads", str(threads)]
        outcome = run_step(
            argv,
            step=STEP,
            python=python,
            env=child_env(threads),
            progress=progress,
            cancel=cancel or CancelToken(),
            cwd=Path(tmp),
            hint="Check that both folders hold the same model (same tokenizer and vocabulary) "
            "and that there is enough memory to run both at once.",
        )
    return FidelityReport.from_details(outcome.details)


# -- the child ------------------------------------------------------------------------------------


def onnx_logits(onnx_dir: Path, ids: list[int], threads: int | None, report: StepReporter) -> Any:
    """[T, V] float64 logits of the ONNX model, feeding one token at a time (the decode path)."""
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(str(onnx_dir))
    if threads:
        options = {"intra_op_num_threads": threads}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 1, do_sample=False)
    generator = og.Generator(model, params)
    rows = []
    for i, token in enumerate(ids):
        generator.append_tokens([token])
        rows.append(np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1))
        if i % 32 == 0:
            report.progress(0.5 + 0.45 * i / len(ids), f"ONNX model: token {i + 1} of {len(ids)}")
    return np.stack(rows)


def reference_logits(hf_dir: Path, ids: list[int]) -> Any:
    """[T, V] float64 logits of the float32 reference model (one torch forward over the text)."""
    import torch
    from transformers import AutoModelForCausalLM

    # from_pretrained returns the model in eval mode (no dropout).
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    with torch.inference_mode():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float64).numpy()


def kl_per_position(reference: Any, model: Any) -> Any:
    """KL(P_ref || P_model) in nats for each row of two [T, V] logit arrays."""
    import numpy as np

    def log_softmax(x: Any) -> Any:
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    ref, mod = log_softmax(reference), log_softmax(model)
    return (np.exp(ref) * (ref - mod)).sum(axis=-1)


def measure(
    onnx_dir: Path, hf_dir: Path, text: str, threads: int | None, report: StepReporter
) -> dict[str, Any]:
    import time

    import numpy as np

    started = time.monotonic()
    report.progress(0.02, "Loading the reference model")
    import torch
    from transformers import AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    ids = AutoTokenizer.from_pretrained(str(hf_dir))(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise ValueError("the text is too short: it needs at least two tokens")
    reference = reference_logits(hf_dir, ids)
    reference_done = time.monotonic()
    report.progress(0.5, "Running the ONNX model")
    model = onnx_logits(onnx_dir, ids, threads, report)
    onnx_s = time.monotonic() - reference_done
    if model.shape != reference.shape:
        raise ValueError(
            f"the models disagree on the vocabulary: logits {list(model.shape)} vs. "
            f"{list(reference.shape)} from the reference"
        )
    kl = kl_per_position(reference, model)
    if not np.all(np.isfinite(kl)):
        raise ValueError("the ONNX model produced non-finite logits")
    agree = float(np.mean(reference.argmax(-1) == model.argmax(-1)))
    report.progress(1.0, f"Mean KL divergence {float(kl.mean()):.4f}")
    return {
        "mean_kl": float(kl.mean()),
        "median_kl": float(np.median(kl)),
        "max_kl": float(kl.max()),
        "top1_agreement": agree,
        "tokens": len(ids),
        "seconds": round(time.monotonic() - started, 2),
        "onnx_seconds": round(onnx_s, 2),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.compile.fidelity")
    parser.add_argument("--onnx", required=True, type=Path)
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("--text-file", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    text = args.text_file.read_text(encoding="utf-8") if args.text_file else DEFAULT_TEXT
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or None

    def body(report: StepReporter) -> dict[str, Any]:
        details = measure(args.onnx.resolve(), args.reference.resolve(), text, threads, report)
        if not math.isfinite(details["mean_kl"]):
            raise ValueError("the KL divergence is not finite")
        return details

    return run_as_child(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
