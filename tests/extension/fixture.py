"""Test fixture for the extension's end-to-end runs: the real default model, served by a local
Hugging Face look-alike (so "Download" in the UI is a real download), or seeded into an Ingot home.

    python tests/extension/fixture.py hub --out info.json     # serve until stdin closes
    python tests/extension/fixture.py seed --home DIR          # cache the default model in DIR

`hub` writes {"hfEndpoint", "catalog", "hfHome"} to --out: a catalog file that points the shipped
default variant (smollm2-135m-instruct-cpu-gguf:1, the GGUF import) at the hub, for INGOT_CATALOGS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.exact_model import build_exact_model  # noqa: E402
from tests.support.paths import TEST_BUILD_ROOT  # noqa: E402

DEFAULT_VARIANT = "smollm2-135m-instruct-cpu-gguf"
HF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-ingot-onnx-gguf"


def hub_catalog(onnx: Path) -> dict[str, object]:
    shipped = json.loads(
        resources.files("engine.catalog").joinpath("catalog.json").read_text(encoding="utf-8")
    )
    variant = next(v for v in shipped["variants"] if v["name"] == DEFAULT_VARIANT)
    variant = {k: v for k, v in variant.items() if k != "build"}
    variant["source"] = {"kind": "huggingface", "repo": HF_REPO, "revision": "main"}
    variant["size_bytes"] = sum(p.stat().st_size for p in onnx.rglob("*") if p.is_file())
    return {"schema": 1, "variants": [variant]}


def serve_hub(out: Path, throttle_bps: int | None) -> None:
    from tests.support.hf_server import HfTestServer

    _, onnx = build_exact_model(TEST_BUILD_ROOT)
    work = Path(tempfile.mkdtemp(prefix="ingot-ext-hub-"))
    catalog = work / "catalog.json"
    catalog.write_text(json.dumps(hub_catalog(onnx)), encoding="utf-8")
    with HfTestServer({HF_REPO: onnx}) as hub:
        hub.throttle_bps = throttle_bps  # slow enough for the progress notification to be seen
        info = {"hfEndpoint": hub.url, "catalog": str(catalog), "hfHome": str(work / "hf-home")}
        out.write_text(json.dumps(info), encoding="utf-8")
        print(json.dumps(info), flush=True)
        sys.stdin.read()  # until the driver closes our stdin


def seed(home: Path) -> None:
    from tests.conftest import DEFAULT_ONNX_ID, seed_model

    _, onnx = build_exact_model(TEST_BUILD_ROOT)
    home.mkdir(parents=True, exist_ok=True)
    seed_model(home, DEFAULT_ONNX_ID, onnx, "build", "onnx-genai", "onnx")
    print(json.dumps({"home": str(home), "model": DEFAULT_ONNX_ID}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hub")
    h.add_argument("--out", type=Path, required=True)
    h.add_argument("--throttle-bps", type=int, default=None)
    s = sub.add_parser("seed")
    s.add_argument("--home", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "hub":
        serve_hub(args.out, args.throttle_bps)
    else:
        seed(args.home)


if __name__ == "__main__":
    main()
