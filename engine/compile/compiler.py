"""Compiler: GGUF -> Hugging Face folder -> ONNX Runtime GenAI folder, each step in a child process."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from engine.compile.child import run_step
from engine.compile.toolchain import (
    ALL_MODULES,
    DEVICES,
    GGUF_TO_HF_MODULES,
    HF_TO_ONNX_MODULES,
    PRECISIONS,
    child_env,
    require_modules,
)
from engine.errors import CompileFailed
from engine.progress import CancelToken, Progress, ProgressCallback

# The builder computes logits for every prompt position unless told not to; generation needs only
# the last one, so pruning saves prefill time and memory at no cost.
DEFAULT_EXTRA_OPTIONS = {"prune_lm_head": "true"}

GGUF_STEP = "GGUF to Hugging Face conversion"
ONNX_STEP = "ONNX model build"


class Compiler:
    """Builds model folders with the compile toolchain of the interpreter `python`.

    Every heavy step runs in a child process of `python` (its own process group): the engine never
    imports torch or transformers, and a cancel kills the child. Blocking; call from a worker thread.
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def check_toolchain(self) -> None:
        """Raise ToolchainMissing naming every toolchain module `python` lacks (imports nothing)."""
        require_modules(self.python, ALL_MODULES, step="model compile toolchain")

    def gguf_to_hf(
        self, gguf: Path, out_dir: Path, *, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        """Convert a GGUF file into a float32 safetensors Hugging Face folder `out_dir`."""
        gguf, out_dir = Path(gguf).resolve(), Path(out_dir).resolve()
        cancel.raise_if_cancelled(GGUF_STEP)
        if not gguf.is_file():
            raise CompileFailed(
                f"The {GGUF_STEP} cannot start: {gguf} does not exist.",
                hint="Download the model again (`ingot model download`).",
            )
        require_modules(self.python, GGUF_TO_HF_MODULES, step=GGUF_STEP)
        _claim_empty(out_dir, GGUF_STEP)
        try:
            progress(Progress(stage="compile", message=f"Converting {gguf.name}", fraction=0.0))
            run_step(
                [self.python, "-m", "engine.compile.gguf_to_hf", str(gguf), str(out_dir)],
                step=GGUF_STEP,
                python=self.python,
                env=child_env(),
                cwd=out_dir,
                progress=progress,
                cancel=cancel,
                hint="Check that the file is a complete GGUF model of a supported architecture "
                "(Llama, Qwen2, Mistral, …) and that there is enough memory and disk space.",
            )
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise

    def hf_to_onnx(
        self,
        hf_dir: Path,
        out_dir: Path,
        *,
        precision: str = "int8",
        device: str = "cpu",
        extra_options: dict[str, str] | None = None,
        work_dir: Path,
        threads: int | None = None,
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> None:
        """Build an ONNX Runtime GenAI folder `out_dir` from a Hugging Face folder.

        Runs onnxruntime-genai's model builder with `-p precision -e device -c work_dir` and
        `--extra_options prune_lm_head=true` plus `extra_options` (which may override it).
        """
        hf_dir, out_dir, work_dir = (Path(p).resolve() for p in (hf_dir, out_dir, work_dir))
        cancel.raise_if_cancelled(ONNX_STEP)
        options = {**DEFAULT_EXTRA_OPTIONS, **(extra_options or {})}
        _validate_build(hf_dir, precision, device, options)
        require_modules(self.python, HF_TO_ONNX_MODULES, step=ONNX_STEP)
        _claim_empty(out_dir, ONNX_STEP)
        created_work = not work_dir.exists()
        argv = [self.python, "-m", "engine.compile.onnx_build", "--hf", str(hf_dir)]
        argv += ["--out", str(out_dir), "--work", str(work_dir)]
        argv += ["--precision", precision, "--device", device]
        if threads:
            argv += ["--threads", str(threads)]
        argv += [f"--extra={k}={v}" for k, v in options.items()]
        try:
            progress(
                Progress(stage="compile", message=f"Building {precision} {device}", fraction=0.0)
            )
            work_dir.mkdir(parents=True, exist_ok=True)
            run_step(
                argv,
                step=ONNX_STEP,
                python=self.python,
                env=child_env(threads),
                cwd=work_dir,
                progress=progress,
                cancel=cancel,
                hint=f"Check that {hf_dir} is a complete Hugging Face model folder of an "
                "architecture onnxruntime-genai's builder supports, and that the precision and "
                "extra options suit it.",
            )
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            if created_work:
                shutil.rmtree(work_dir, ignore_errors=True)
            raise


def _claim_empty(out_dir: Path, step: str) -> None:
    """Use `out_dir` only if it is new or empty: it is deleted again if the step fails."""
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise CompileFailed(
            f"The {step} needs an empty output folder, but {out_dir} has files in it.",
            hint="Empty or remove the folder and try again.",
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompileFailed(
            f"The {step} cannot create {out_dir}: {e.strerror or e}.",
            hint="Check the permissions and free space of the cache folder.",
        ) from e


def _validate_build(hf_dir: Path, precision: str, device: str, options: dict[str, str]) -> None:
    if not (hf_dir / "config.json").is_file():
        raise CompileFailed(
            f"The {ONNX_STEP} cannot start: {hf_dir} has no config.json.",
            hint="Point it at a Hugging Face model folder (config.json, weights, tokenizer).",
        )
    if precision not in PRECISIONS:
        raise CompileFailed(
            f"The {ONNX_STEP} does not know the precision {precision!r}.",
            hint=f"Use one of: {', '.join(PRECISIONS)}.",
        )
    if device not in DEVICES:
        raise CompileFailed(
            f"The {ONNX_STEP} does not know the device {device!r}.",
            hint=f"Use one of: {', '.join(DEVICES)}.",
        )
    bad = [k for k in options if not k or "=" in k or any(c.isspace() for c in k)]
    if bad:
        raise CompileFailed(
            f"The {ONNX_STEP} got malformed extra option names: {', '.join(map(repr, bad))}.",
            hint="Extra options are KEY=VALUE pairs of the onnxruntime-genai model builder.",
        )
