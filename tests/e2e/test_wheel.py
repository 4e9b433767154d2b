"""The engine as a new user installs it: the wheel the .vsix carries (distribution ingot-engine), in a
fresh virtual environment, run from a folder that is not this checkout, with nothing of the checkout
on sys.path: `ingot --version`, the catalog, a streamed answer, and the JSON-RPC server's start."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPO

WHEEL_DIR = REPO / "extension" / "engine"


@pytest.fixture(scope="module")
def wheel() -> Path:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build_wheel.sh"), sys.executable], check=True, timeout=600
    )
    wheels = sorted(WHEEL_DIR.glob("ingot_engine-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only the wheel and its dependencies from the package index."""
    env_dir = tmp_path_factory.mktemp("fresh-venv")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


def _clean_env(home: Path | None = None) -> dict[str, str]:
    """The environment minus anything that would let the checkout leak into the fresh install."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
    )
    if home is not None:
        env.update({"INGOT_HOME": str(home), "INGOT_THREADS": "2", "HF_HUB_OFFLINE": "1"})
    return env


def test_the_wheel_is_named_ingot_engine_and_carries_its_package_data(wheel: Path) -> None:
    assert wheel.name.startswith("ingot_engine-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "engine/catalog/catalog.json",
        "engine/runtimes/onnx_worker.py",
        "engine/runtimes/vllm_launcher.py",
        "protocol/generated/schema.json",
        "server/jsonrpc/__main__.py",
        "engine/py.typed",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "ingot = server.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith(("tests/", "scripts/", "extension/")) for n in names)


@pytest.mark.slow
def test_the_installed_engine_runs_outside_the_checkout(
    fresh_env: Path, seeded_home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    env = _clean_env(seeded_home)
    ingot = str(fresh_env / "bin" / "ingot")
    python = str(fresh_env / "bin" / "python")

    where = subprocess.run(
        [python, "-c", "import engine, server, protocol; print(engine.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert str(fresh_env) in where.stdout and str(REPO) not in where.stdout

    version = subprocess.run(
        [ingot, "--version"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.strip() == "ingot 0.1.0", version

    listed = subprocess.run(
        [ingot, "model", "list"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and "smollm2-135m" in listed.stdout, listed.stderr

    # The real runtime in its worker process, started from the installed package.
    ran = subprocess.run(
        [ingot, "model", "run", "smollm2-135m", "--prompt", "Say hello.", "--max-tokens", "12"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() and "Traceback" not in ran.stderr

    # The JSON-RPC server the extension runs: it starts and answers `initialize` on stdout.
    body = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":null,"capabilities":{}}}'
    frame = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    proc = subprocess.Popen(
        [python, "-m", "server"],
        cwd=elsewhere,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame)
        proc.stdin.flush()
        header = proc.stdout.readline()
        assert header.startswith(b"Content-Length: "), header
    finally:
        proc.kill()
        proc.wait(timeout=30)
