"""Benchmark: EngineService vs. a bare onnxruntime-genai loop on the same model folder.

Interleaves the two (bare, engine, bare, engine, ...) in one process so machine noise hits both,
and reports medians: decode tokens/s, time to first token, load time; plus the engine's idle RSS
measured in a fresh process. Usage:

    .venv/bin/python scripts/bench_engine.py [--model-dir DIR] [--reps 5] [--tokens 128] [-o json]

Without --model-dir it builds (or reuses) the default model in .cache/test-models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_rest import settle, unseen  # noqa: E402

PROMPT_MESSAGES = [
    {
        "role": "user",
        "content": "Explain in detail how a bicycle works, covering the frame, the wheels, "
        "the chain, the gears and the brakes, and why each part matters.",
    }
]


def unseen_prompt(tokenizer: Any, i: int) -> str:
    """PROMPT_MESSAGES rendered behind a system prompt used only once (see bench_rest.unseen):
    the engine's prompt cache can reuse only the template's first tokens."""
    return str(
        tokenizer.apply_chat_template(
            json.dumps(unseen(i, PROMPT_MESSAGES)), add_generation_prompt=True
        )
    )


def bare_run(model: Any, tokenizer: Any, prompt: str, n: int) -> tuple[float, float]:
    import onnxruntime_genai as og

    t0 = time.perf_counter()
    tokens = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(tokens) + n)
    gen = og.Generator(model, params)
    stream = tokenizer.create_stream()
    gen.append_tokens(tokens)
    first = None
    count = 0
    while not gen.is_done() and count < n:
        gen.generate_next_token()
        stream.decode(gen.get_next_tokens()[0])
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return (first - t0) * 1000, (count - 1) / (end - first)


async def engine_run(service: Any, prompt: str, n: int) -> tuple[float, float]:
    from engine.generation import SamplingParams
    from engine.requests import CompletionRequest, GenerationResult

    result = None
    req = CompletionRequest(
        model="bench-model", prompt=prompt, params=SamplingParams(max_tokens=n, temperature=0)
    )
    async for ev in service.complete(req):
        if isinstance(ev, GenerationResult):
            result = ev
    assert result is not None
    rec = result.record
    return float(rec.ttft_ms or 0), float(rec.decode_tps or 0)


def idle_rss_mb(home: Path) -> float:
    code = (
        "import asyncio, psutil, os\n"
        "from engine.bootstrap import build_engine\n"
        "from engine.config import EngineConfig\n"
        "async def main():\n"
        f"    s = build_engine(EngineConfig.from_env(home={str(home)!r}))\n"
        "    await s.start(); await asyncio.sleep(1.5)\n"
        "    s.list_models(); print(psutil.Process().memory_info().rss / 1e6)\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("-o", "--output", choices=["text", "json"], default="text")
    args = ap.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from tests.support.models import build_default_model
        from tests.support.paths import TEST_BUILD_ROOT

        model_dir = build_default_model(TEST_BUILD_ROOT)[1]

    import onnxruntime_genai as og

    from engine.bootstrap import build_engine
    from engine.config import EngineConfig

    home = Path(tempfile.mkdtemp(prefix="ingot-bench-"))
    service = build_engine(EngineConfig.from_env(home=home, threads=args.threads))
    await service.start()
    await service.register(model_dir, name="bench-model")

    t = time.perf_counter()
    cfg = og.Config(str(model_dir))
    cfg.clear_providers()
    cfg.overlay(
        json.dumps(
            {"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads}}}}
        )
    )
    model = og.Model(cfg)
    tokenizer = og.Tokenizer(model)
    bare_load = time.perf_counter() - t
    t = time.perf_counter()
    await service.load("bench-model", ttl_s=-1)
    engine_load = time.perf_counter() - t
    prompt = tokenizer.apply_chat_template(json.dumps(PROMPT_MESSAGES), add_generation_prompt=True)

    bare_run(model, tokenizer, prompt, 8)  # warm-up both paths
    await engine_run(service, prompt, 8)
    bare: list[tuple[float, float]] = []
    eng: list[tuple[float, float]] = []
    for i in range(args.reps):
        fresh = unseen_prompt(tokenizer, i)  # nothing for the prompt cache to reuse
        await settle()
        bare.append(bare_run(model, tokenizer, fresh, args.tokens))
        await settle()
        eng.append(await engine_run(service, fresh, args.tokens))
    await service.close()

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    result = {
        "prompt_tokens": len(tokenizer.encode(unseen_prompt(tokenizer, 0))),
        "completion_tokens": args.tokens,
        "threads": args.threads,
        "reps": args.reps,
        "bare": {"ttft_ms": med(bare, 0), "decode_tps": med(bare, 1), "load_s": bare_load},
        "engine": {"ttft_ms": med(eng, 0), "decode_tps": med(eng, 1), "load_s": engine_load},
        "engine_idle_rss_mb": idle_rss_mb(home),
    }
    result["decode_ratio"] = result["engine"]["decode_tps"] / result["bare"]["decode_tps"]
    result["ttft_overhead_ms"] = result["engine"]["ttft_ms"] - result["bare"]["ttft_ms"]
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return
    b, e = result["bare"], result["engine"]
    print(
        f"prompt {result['prompt_tokens']} tokens, {args.tokens} generated, {args.threads} threads, median of {args.reps}"
    )
    print(f"{'':10} {'TTFT ms':>9} {'decode tok/s':>13} {'load s':>7}")
    print(f"{'bare':10} {b['ttft_ms']:9.1f} {b['decode_tps']:13.1f} {b['load_s']:7.2f}")
    print(f"{'engine':10} {e['ttft_ms']:9.1f} {e['decode_tps']:13.1f} {e['load_s']:7.2f}")
    print(
        f"decode ratio {result['decode_ratio']:.3f}  TTFT overhead {result['ttft_overhead_ms']:+.1f} ms  "
        f"engine idle RSS {result['engine_idle_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    asyncio.run(main())
