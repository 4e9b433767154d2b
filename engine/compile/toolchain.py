"""The compile toolchain: modules each step needs, a cheap check for them, and the child environment."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.errors import ToolchainMissing
from engine.runtimes.child_process import without_secrets

GGUF_TO_HF_MODULES = ("torch", "transformers", "gguf", "accelerate")
HF_TO_ONNX_MODULES = ("torch", "transformers", "onnx", "onnx_ir", "onnxruntime_genai")
ALL_MODULES = tuple(dict.fromkeys(GGUF_TO_HF_MODULES + HF_TO_ONNX_MODULES))

# What the model builder accepts for -p and -e (from get_args() in onnxruntime_genai.models.builder).
PRECISIONS = ("int4", "int8", "bf16", "fp16", "fp32")
DEVICES = ("cpu", "cuda", "dml", "webgpu", "NvTensorRtRtx")

INSTALL_COMMAND = "pip install 'ingot-engine[compile]'"

# find_spec locates a module without executing it, so checking for torch costs milliseconds.
_PROBE = (
    "import importlib.util, json, sys\n"
    "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))\n"
)


def missing_modules(python: str, modules: Iterable[str], *, timeout_s: float = 60.0) -> list[str]:
    """The modules of `modules` that `python` cannot find; checked in a child process of `python`."""
    wanted = list(modules)
    try:
        done = subprocess.run(
            [python, "-c", _PROBE, *wanted],
            capture_output=True,
            env=child_env(),
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolchainMissing(
            f"The compile interpreter {python} does not exist.",
            hint=f"Point INGOT_COMPILE_PYTHON at a Python that has the toolchain ({INSTALL_COMMAND}).",
            python=python,
        ) from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainMissing(
            f"The compile interpreter {python} cannot be run: {e}.",
            hint=f"Point INGOT_COMPILE_PYTHON at a working Python that has the toolchain ({INSTALL_COMMAND}).",
            python=python,
        ) from e
    try:
        missing = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise ToolchainMissing(
            f"The compile interpreter {python} failed to start (exit {done.returncode}): {tail}",
            hint="Point INGOT_COMPILE_PYTHON at a working Python 3.11+.",
            python=python,
        ) from None
    return [str(m) for m in missing]


def require_modules(python: str, modules: Iterable[str], *, step: str) -> None:
    """Raise ToolchainMissing naming every module of `modules` that `python` lacks."""
    missing = missing_modules(python, modules)
    if missing:
        raise toolchain_missing(python, missing, step=step)


def toolchain_missing(python: str, missing: list[str], *, step: str) -> ToolchainMissing:
    names = ", ".join(missing)
    return ToolchainMissing(
        f"The {step} needs Python modules that {python} does not have: {names}.",
        hint=f"Install the compile toolchain into that environment: {python} -m {INSTALL_COMMAND}, "
        "or set INGOT_COMPILE_PYTHON to an interpreter that has it.",
        python=python,
        missing=missing,
    )


@functools.cache
def engine_path_entry() -> str:
    """A sys.path entry that makes `engine` importable in a child interpreter, and nothing else.

    From a source checkout that is the checkout itself. An installed engine lives in site-packages,
    which must not be put in front of another interpreter's own packages (its numpy or torch would
    be shadowed), so a private folder holding only a link to the package is used instead.
    """
    package = Path(__file__).resolve().parents[1]
    parent = package.parent
    if parent.name not in ("site-packages", "dist-packages"):
        return str(parent)
    shim = Path(tempfile.mkdtemp(prefix="ingot-engine-path-"))
    try:
        (shim / "engine").symlink_to(package, target_is_directory=True)
    except OSError:
        return str(parent)
    return str(shim)


def child_env(threads: int | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a compile child: engine importable, no progress bars, no network, and
    none of the engine's secrets (a conversion script has no use for an API key or hub token)."""
    env = without_secrets(os.environ)
    entries = [engine_path_entry()]
    if env.get("PYTHONPATH"):
        entries.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(entries)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    # Progress bars redraw with carriage returns and would fill the stderr tail kept for errors.
    env["TQDM_DISABLE"] = "1"
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # Every input is a local file; a step must never wait on a model hub.
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    if extra:
        env.update(extra)
    return env
