"""Test fixture for the extension's extension-host runs: the real default model seeded into an
Ingot home (the end-to-end run builds it through Set up Ingot instead).

    python tests/extension/fixture.py seed --home DIR          # cache the default model in DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.exact_model import build_exact_model  # noqa: E402
from tests.support.paths import TEST_BUILD_ROOT  # noqa: E402


def seed(home: Path) -> None:
    from tests.conftest import DEFAULT_ONNX_ID, seed_model

    _, onnx = build_exact_model(TEST_BUILD_ROOT)
    home.mkdir(parents=True, exist_ok=True)
    seed_model(home, DEFAULT_ONNX_ID, onnx, "build", "onnx-genai", "onnx")
    print(json.dumps({"home": str(home), "model": DEFAULT_ONNX_ID}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--home", type=Path, required=True)
    args = ap.parse_args()
    seed(args.home)


if __name__ == "__main__":
    main()
