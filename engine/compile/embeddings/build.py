"""Embedding models: build an ONNX encoder from a sentence-transformers zip, and check its fidelity.

Both run in a child process of the compile toolchain's Python (engine.compile.embeddings.child):
the engine never imports torch.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.compile.child import run_step
from engine.compile.toolchain import child_env, require_modules
from engine.errors import CompileFailed
from engine.progress import CancelToken, Progress, ProgressCallback, no_progress

BUILD_STEP = "embedding model export"
VERIFY_STEP = "embedding fidelity check"
EMBEDDING_MODULES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy")
# The lowest cosine with the sentence-transformers reference a faithful export must reach.
COSINE_TARGET = 0.999
HINT = (
    "Check that the source is a complete sentence-transformers folder (config.json, "
    "model.safetensors, tokenizer.json, 1_Pooling/config.json) and that there is enough memory."
)


@dataclass(frozen=True)
class EmbeddingFidelityReport:
    """Cosine similarity of an embedding model's vectors with the torch reference's."""

    min_cosine: float
    mean_cosine: float
    sentences: int
    tokens: int
    seconds: float

    @property
    def meets_target(self) -> bool:
        return self.min_cosine >= COSINE_TARGET

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> EmbeddingFidelityReport:
        return cls(
            min_cosine=float(details["min_cosine"]),
            mean_cosine=float(details["mean_cosine"]),
            sentences=int(details["sentences"]),
            tokens=int(details["tokens"]),
            seconds=float(details.get("seconds", 0.0)),
        )


def _threads(threads: int | None) -> int:
    import os

    return threads or min(4, os.cpu_count() or 1)


def build_embedding_model(
    source: Path,
    out: Path,
    *,
    python: str | None = None,
    threads: int | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Export the sentence-transformers model in `source` (a folder, or a zip of one) into `out`:
    model.onnx, tokenizer.json and embedding_config.json. The child checks the result against
    the torch reference and fails below COSINE_TARGET. Returns the child's details."""
    python = python or sys.executable
    cancel = cancel or CancelToken()
    source, out = Path(source).resolve(), Path(out).resolve()
    cancel.raise_if_cancelled(BUILD_STEP)
    if not source.exists():
        raise CompileFailed(f"The {BUILD_STEP} cannot start: {source} does not exist.", hint=HINT)
    require_modules(python, EMBEDDING_MODULES, step=BUILD_STEP)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="ingot-embed-", dir=out.parent))
    n = _threads(threads)
    argv = [python, "-m", "engine.compile.embeddings.child", "build", "--source", str(source)]
    argv += ["--out", str(out), "--work", str(work), "--threads", str(n)]
    try:
        progress(Progress(stage="compile", message=f"Exporting {source.name}", fraction=0.0))
        outcome = run_step(
            argv,
            step=BUILD_STEP,
            python=python,
            env=child_env(n),
            cwd=work,
            progress=progress,
            cancel=cancel,
            hint=HINT,
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcome.details


def measure_embedding_fidelity(
    onnx_dir: Path,
    source: Path,
    *,
    python: str | None = None,
    threads: int | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    work_parent: Path | None = None,
) -> EmbeddingFidelityReport:
    """Cosine of `onnx_dir`'s vectors (computed as the worker does) with sentence-transformers'
    (mean pooling and normalisation in float32 torch) over a fixed set of sentences."""
    python = python or sys.executable
    onnx_dir, source = Path(onnx_dir).resolve(), Path(source).resolve()
    if not source.exists():
        raise CompileFailed(
            f"The {VERIFY_STEP} cannot start: the source {source} is gone.",
            hint="Reinstall the package the model came from, or download the model again.",
        )
    require_modules(python, EMBEDDING_MODULES, step=VERIFY_STEP)
    n = _threads(threads)
    with tempfile.TemporaryDirectory(prefix="ingot-embed-verify-", dir=work_parent) as tmp:
        argv = [python, "-m", "engine.compile.embeddings.child", "verify"]
        argv += ["--source", str(source), "--onnx", str(onnx_dir), "--work", tmp]
        argv += ["--threads", str(n)]
        outcome = run_step(
            argv,
            step=VERIFY_STEP,
            python=python,
            env=child_env(n),
            cwd=Path(tmp),
            progress=progress,
            cancel=cancel or CancelToken(),
            hint=HINT,
        )
    return EmbeddingFidelityReport.from_details(outcome.details)
