"""Benchmark: latency classes. Inline completions typed while a long chat streams on the same
model, sent as interactive requests (what the editor sends) vs. as ordinary chat-class requests.

Reports p50/p95 time to first token and total time of the completions in both cases, and how far
the chat got meanwhile. Usage:

    .venv/bin/python scripts/bench_latency.py [--model-dir DIR] [--completions 12] [-o json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.bootstrap import build_engine  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.generation import SamplingParams  # noqa: E402
from engine.requests import ChatRequest, CompletionRequest, Delta, GenerationResult  # noqa: E402
from engine.scheduler import PRIORITY_CHAT, PRIORITY_INTERACTIVE  # noqa: E402
from engine.service import EngineService  # noqa: E402

STORY = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
CODE = "def fibonacci(n):\n    "


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def completion(svc: EngineService, priority: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = None
    req = CompletionRequest(
        "bench-model",
        CODE,
        params=SamplingParams(max_tokens=12, temperature=0),
        priority=priority,
        kind="inline",
    )
    stream = svc.complete(req)
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for ev in stream:
            if isinstance(ev, Delta) and first is None:
                first = time.perf_counter()
            if isinstance(ev, GenerationResult):
                break
    end = time.perf_counter()
    return ((first or end) - t0) * 1000, (end - t0) * 1000


async def round_(svc: EngineService, priority: int, n: int) -> dict[str, Any]:
    chat_tokens = 0
    started = asyncio.Event()

    async def chat() -> None:
        nonlocal chat_tokens
        req = ChatRequest("bench-model", STORY, SamplingParams(max_tokens=2000, temperature=0))
        async for ev in svc.chat(req):
            if isinstance(ev, Delta):
                chat_tokens = ev.tokens
                started.set()

    task = asyncio.create_task(chat())
    await started.wait()
    ttft, total = [], []
    for _ in range(n):
        a, b = await completion(svc, priority)
        ttft.append(a)
        total.append(b)
        await asyncio.sleep(0.2)  # typing between completions
    streamed = chat_tokens
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return {
        "ttft_p50_ms": statistics.median(ttft),
        "ttft_p95_ms": pct(ttft, 0.95),
        "total_p50_ms": statistics.median(total),
        "total_p95_ms": pct(total, 0.95),
        "chat_tokens_meanwhile": streamed,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--completions", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = ap.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from tests.support.models import build_default_model
        from tests.support.paths import TEST_BUILD_ROOT

        model_dir = build_default_model(TEST_BUILD_ROOT)[1]
    home = Path(tempfile.mkdtemp(prefix="ingot-bench-latency-"))
    svc = build_engine(EngineConfig(home=home, threads=args.threads))
    await svc.start()
    try:
        await svc.register(model_dir, name="bench-model")
        await svc.load("bench-model", ttl_s=-1)
        await completion(svc, PRIORITY_INTERACTIVE)  # warm up
        # Overlapping requests build the worker's batching session (once per load): do that
        # before measuring, as any model that has served two requests at once has.
        await asyncio.gather(*(completion(svc, PRIORITY_CHAT) for _ in range(2)))
        await asyncio.sleep(2.0)
        idle = [await completion(svc, PRIORITY_INTERACTIVE) for _ in range(args.completions)]
        result = {
            "idle": {
                "ttft_p50_ms": statistics.median(a for a, _ in idle),
                "ttft_p95_ms": pct([a for a, _ in idle], 0.95),
                "total_p50_ms": statistics.median(b for _, b in idle),
                "total_p95_ms": pct([b for _, b in idle], 0.95),
            },
            "interactive_during_chat": await round_(svc, PRIORITY_INTERACTIVE, args.completions),
            "chat_class_during_chat": await round_(svc, PRIORITY_CHAT, args.completions),
        }
    finally:
        await svc.close()
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return
    print(f"{args.completions} inline completions (12 tokens) each; a 2000-token chat streams")
    print(f"{'':26} {'TTFT p50':>9} {'p95':>7} {'total p50':>10} {'p95':>7} {'chat tok':>9}")
    for name, r in result.items():
        print(
            f"{name:26} {r['ttft_p50_ms']:9.0f} {r['ttft_p95_ms']:7.0f} "
            f"{r['total_p50_ms']:10.0f} {r['total_p95_ms']:7.0f} "
            f"{r.get('chat_tokens_meanwhile', ''):>9}"
        )


if __name__ == "__main__":
    asyncio.run(main())
