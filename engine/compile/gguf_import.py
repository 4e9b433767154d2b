"""Exact GGUF import: the GGUF's own Q4_0/Q4_1/Q8_0 blocks in an ONNX Runtime GenAI folder."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.compile.child import run_step
from engine.compile.compiler import Compiler, _claim_empty
from engine.compile.toolchain import ALL_MODULES, child_env, require_modules
from engine.errors import CompileFailed
from engine.progress import CancelToken, Progress, ProgressCallback

IMPORT_STEP = "GGUF import"
INSPECT_STEP = "GGUF inspection"
TRANSCODE_STEP = "GGUF block transcode"
IMPORT_MODULES = (*ALL_MODULES, "safetensors")
# The types gguf_blocks writes as they are (its BLOCK_BYTES keys); spelled out here so that the
# engine can import this module without numpy.
EXACT_TYPES = ("Q4_0", "Q4_1", "Q8_0")
# Where each stage ends, as a fraction of the whole import (measured on SmolLM2-135M: conversion
# ~35 s, the int8 build ~15 s, the transcode ~6 s).
_INSPECTED, _CONVERTED, _BUILT = 0.02, 0.55, 0.85


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote: which tensors kept their GGUF blocks and which were re-quantised."""

    out_dir: Path
    gguf: Path
    architecture: str
    exact: dict[str, int]  # GGUF type -> tensors written as their own blocks
    requantized: dict[str, int]  # GGUF type -> tensors the builder re-quantised to int8
    requantized_nodes: list[str] = field(default_factory=list)
    offset_nodes: int = 0  # MatMulNBits with a Q4_1 offset branch
    embedding: str = ""
    lm_head: str = ""
    reference_hf_dir: Path | None = None  # the dequantised float32 folder, if it was kept
    seconds: float = 0.0

    @property
    def is_exact(self) -> bool:
        """True when every linear weight is the GGUF's own blocks."""
        return not self.requantized


def _scaled(progress: ProgressCallback, lo: float, hi: float) -> ProgressCallback:
    def report(p: Progress) -> None:
        fraction = None if p.fraction is None else lo + (hi - lo) * min(max(p.fraction, 0.0), 1.0)
        progress(Progress(stage="compile", message=p.message, fraction=fraction))

    return report


def _refuse_inexact(gguf: Path, inspected: dict[str, Any]) -> None:
    linear: dict[str, int] = inspected.get("linear_types") or {}
    inexact = {t: n for t, n in linear.items() if t not in EXACT_TYPES}
    if inexact:
        listed = ", ".join(f"{t} ({n} tensors)" for t, n in sorted(inexact.items()))
        raise CompileFailed(
            f"{gguf.name} has linear weights of types with no exact MatMulNBits form: {listed}. "
            f"Exact import writes only {', '.join(EXACT_TYPES)} blocks as they are.",
            hint="Allow int8 re-quantisation of the other types (requantize=True), or use a "
            "Q4_0, Q4_1 or Q8_0 file of the model.",
            types=inexact,
        )


def import_gguf(
    gguf: Path,
    out_dir: Path,
    *,
    progress: ProgressCallback,
    cancel: CancelToken,
    hf_dir: Path | None = None,
    requantize: bool = True,
    python: str | None = None,
    threads: int | None = None,
) -> ImportReport:
    """Turn `gguf` into an ONNX Runtime GenAI folder `out_dir` that keeps the GGUF's own blocks.

    Steps, each a child process of `python` (cancel kills it): inspect the GGUF; dequantise it to
    a float32 Hugging Face folder (gguf_to_hf: config, tokenizer and chat template come from the
    GGUF); build that folder with onnxruntime-genai's builder at int8; write the GGUF's Q4_0 /
    Q4_1 / Q8_0 blocks over the builder's MatMulNBits weights (Q4_1 with a per-block offset
    branch, Q8_0 as 8-bit), checked bit for bit against the float32 folder.

    Other linear types stay as the builder's int8 re-quantisation, or are refused when
    `requantize` is False. `hf_dir`: a folder gguf_to_hf made from this GGUF is reused; an empty or
    missing one is filled and kept (as the reference for measure_fidelity); None uses a
    temporary one. Blocking; call from a worker thread.
    """
    started = time.monotonic()
    gguf, out_dir = Path(gguf).resolve(), Path(out_dir).resolve()
    python = python or sys.executable
    cancel.raise_if_cancelled(IMPORT_STEP)
    if not gguf.is_file():
        raise CompileFailed(
            f"The {IMPORT_STEP} cannot start: {gguf} does not exist.",
            hint="Check the path, or download the model again (`ingot model download`).",
        )
    require_modules(python, IMPORT_MODULES, step=IMPORT_STEP)
    _claim_empty(out_dir, IMPORT_STEP)
    work = out_dir.parent / f".{out_dir.name}.import-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    compiler = Compiler(python)
    try:
        progress(Progress(stage="compile", message=f"Inspecting {gguf.name}", fraction=0.0))
        inspected = run_step(
            [python, "-m", "engine.compile.gguf_transcode", "inspect", str(gguf)],
            step=INSPECT_STEP,
            python=python,
            env=child_env(),
            progress=_scaled(progress, 0.0, _INSPECTED),
            cancel=cancel,
            hint="Check that the file is a complete GGUF model.",
        ).details
        if not requantize:
            _refuse_inexact(gguf, inspected)
        reference = Path(hf_dir).resolve() if hf_dir is not None else work / "hf"
        if not (reference / "config.json").is_file():
            compiler.gguf_to_hf(
                gguf,
                reference,
                progress=_scaled(progress, _INSPECTED, _CONVERTED),
                cancel=cancel,
            )
        base = work / "int8"
        compiler.hf_to_onnx(
            reference,
            base,
            precision="int8",
            work_dir=work / "builder",
            threads=threads,
            progress=_scaled(progress, _CONVERTED, _BUILT),
            cancel=cancel,
        )
        argv = [python, "-m", "engine.compile.gguf_transcode", "transcode", "--gguf", str(gguf)]
        argv += ["--hf", str(reference), "--base", str(base), "--out", str(out_dir)]
        if not requantize:
            argv.append("--no-requantize")
        details = run_step(
            argv,
            step=TRANSCODE_STEP,
            python=python,
            env=child_env(threads),
            cwd=work,
            progress=_scaled(progress, _BUILT, 1.0),
            cancel=cancel,
            hint="The GGUF's blocks could not be matched to the built model; report the file "
            "and the message, or import it with the ordinary compile (int8).",
        ).details
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ImportReport(
        out_dir=out_dir,
        gguf=gguf,
        architecture=str(details.get("architecture") or inspected.get("architecture") or ""),
        exact={str(k): int(v) for k, v in (details.get("exact") or {}).items()},
        requantized={str(k): int(v) for k, v in (details.get("requantized") or {}).items()},
        requantized_nodes=[str(n) for n in details.get("requantized_nodes") or []],
        offset_nodes=int(details.get("offset_nodes") or 0),
        embedding=str(details.get("embedding") or ""),
        lm_head=str(details.get("lm_head") or ""),
        reference_hf_dir=Path(hf_dir).resolve() if hf_dir is not None else None,
        seconds=round(time.monotonic() - started, 1),
    )
