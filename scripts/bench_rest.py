"""Benchmark: the REST server's SSE stream vs. a bare onnxruntime-genai loop on the same model folder.

Starts `python -m server.rest` (real process, INGOT_THREADS = --threads), registers the model folder
through the management API, then interleaves bare runs (in this process) with streamed chat requests
(aiohttp client, timestamps taken as each SSE chunk arrives) so machine noise hits both. Reports
medians of decode tokens/s and time to first token, and aggregate tokens/s at several concurrencies.

    .venv/bin/python scripts/bench_rest.py [--model-dir DIR] [--reps 7] [--tokens 128]
        [--threads 2] [--concurrency 1,4,8] [--markdown FILE]

Without --model-dir it builds (or reuses) the default model in .cache/test-models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MESSAGES = [
    {
        "role": "user",
        "content": "Explain in detail how a bicycle works, covering the frame, the wheels, "
        "the chain, the gears and the brakes, and why each part matters.",
    }
]


def unseen(i: int, messages: list[dict[str, str]] = MESSAGES) -> list[dict[str, str]]:
    """`messages` behind a system prompt used only once, as long as the chat template's default
    one: a prompt cache (Ingot's, llama.cpp's prefix reuse) can reuse only the template's first
    tokens of it, so TTFT is measured cold, as the bare loop always runs."""
    system = f"{i * 7919 % 100_003}. You are a helpful AI assistant named SmolLM, trained by"
    return [{"role": "system", "content": system + " Hugging Face"}, *messages]


async def settle() -> None:
    """A pause before each timed request: the thread pools of whichever process ran last (ORT's,
    llama.cpp's) spin for a while after their work ends, and would slow the next one."""
    await asyncio.sleep(0.2)


def bare_run(
    og: Any, model: Any, tokenizer: Any, n: int, messages: list[dict[str, str]] = MESSAGES
) -> dict[str, float]:
    """The reference: render, encode, greedy loop with a decoding stream, no framework at all."""
    t0 = time.perf_counter()
    prompt = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    tokens = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(tokens) + n)
    gen = og.Generator(model, params)
    stream = tokenizer.create_stream()
    gen.append_tokens(tokens)
    first = last = 0.0
    count = 0
    while not gen.is_done() and count < n:
        gen.generate_next_token()
        stream.decode(gen.get_next_tokens()[0])
        count += 1
        last = time.perf_counter()
        if count == 1:
            first = last
    return {"ttft_ms": (first - t0) * 1000, "decode_tps": (count - 1) / (last - first), "n": count}


async def sse_run(
    http: aiohttp.ClientSession, url: str, n: int, messages: list[dict[str, str]] = MESSAGES
) -> dict[str, float]:
    """One streamed chat request; times are taken when each chunk arrives at the client. A chunk
    may carry several tokens (the engine batches them, see onnx_session.FLUSH_S), so the token
    count comes from the usage chunk; the first chunk always carries the first token alone."""
    body = {
        "model": "bench-model",
        "messages": messages,
        "max_tokens": n,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    stamps: list[float] = []
    timings: dict[str, Any] = {}
    tail = b""
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        # Raw reads, not line parsing: the client shares the 2 cores with the server, so it
        # should cost as little as a native client would.
        async for data in r.content.iter_any():
            if b'"delta":{"content":' in data:
                stamps.append(time.perf_counter())
            tail = (tail + data)[-4096:]
    count = 0
    for line in tail.split(b"\n"):
        if line.startswith(b"data: {") and b'"ingot"' in line:
            timings = json.loads(line[6:])["ingot"]["timings"]
        if line.startswith(b"data: {") and b'"usage":{' in line:
            count = int(json.loads(line[6:])["usage"]["completion_tokens"])
    return {
        "ttft_ms": (stamps[0] - t0) * 1000,
        "decode_tps": (count - 1) / (stamps[-1] - stamps[0]),
        "n": count,
        "server_ttft_ms": float(timings.get("ttftMs") or 0),
        "server_decode_tps": float(timings.get("decodeTps") or 0),
    }


async def concurrent(
    http: aiohttp.ClientSession, url: str, k: int, n: int, same: bool = False
) -> dict[str, Any]:
    """k streams at once: each with a prompt of its own (only the template's first tokens in
    common, so every row prefills in full), or all the same prompt (`same`: rows after the first
    copy its prefix from the batch)."""
    t0 = time.perf_counter()
    runs = await asyncio.gather(
        *(sse_run(http, url, n, MESSAGES if same else unseen(1000 * k + j)) for j in range(k))
    )
    wall = time.perf_counter() - t0
    tokens = sum(r["n"] for r in runs)
    ttfts = sorted(r["ttft_ms"] for r in runs)
    return {
        "streams": k,
        "prompts": "same" if same else "distinct",
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tps": tokens / wall,
        "ttft_p50_ms": statistics.median(ttfts),
        "ttft_p95_ms": ttfts[min(len(ttfts) - 1, math.ceil(0.95 * len(ttfts)) - 1)],
    }


def start_server(home: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    from server.state import read_state

    env = {
        **os.environ,
        "INGOT_HOME": str(home),
        "INGOT_THREADS": str(threads),
        "INGOT_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.rest", "--port", "0", "--home", str(home)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(600):
        st = read_state(home)
        if st is not None and st.pid == proc.pid:
            return proc, st.url
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def markdown(res: dict[str, Any]) -> str:
    b, s = res["bare"], res["sse"]
    lines = [
        "## REST server (SSE) vs. bare ONNX Runtime GenAI",
        "",
        f"Measured by `scripts/bench_rest.py` on {res['machine']}: {res['model']}, "
        f"{res['prompt_tokens']}-token chat prompt, greedy, {res['tokens']} tokens, "
        f"{res['threads']} threads, median of {res['reps']} interleaved runs; the SSE client runs "
        "in the benchmark process, the server in its own (`python -m server.rest`).",
        "",
        "| path | TTFT ms (median / best) | decode tok/s (median / best) |",
        "|---|---|---|",
        f"| bare onnxruntime-genai loop | {b['ttft_ms']:.1f} / {b['best_ttft_ms']:.1f} | "
        f"{b['decode_tps']:.1f} / {b['best_decode_tps']:.1f} |",
        f"| REST SSE, seen by the client | {s['ttft_ms']:.1f} / {s['best_ttft_ms']:.1f} | "
        f"{s['decode_tps']:.1f} / {s['best_decode_tps']:.1f} |",
        f"| REST SSE, as the server measured it (`ingot.timings`) | {s['server_ttft_ms']:.1f} | "
        f"{s['server_decode_tps']:.1f} |",
        "",
        f"- SSE decode ratio: **{res['decode_ratio']:.3f}** x the bare runtime on medians, "
        f"{res['best_decode_ratio']:.3f} on best runs (target >= 0.97).",
        f"- Time-to-first-token overhead: **{res['ttft_overhead_ms']:+.1f} ms** on medians, "
        f"{res['best_ttft_overhead_ms']:+.1f} ms on best runs (target <= 10 ms): HTTP, JSON "
        "validation, model resolution, chat template, token count, the worker thread.",
        "",
        "| prompts | concurrent streams | tokens | wall s | aggregate tok/s | x single | "
        "TTFT p50 / p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    single: dict[str, float] = {}
    for c in res["concurrency"]:
        one = single.setdefault(c["prompts"], c["aggregate_tps"])
        lines.append(
            f"| {c['prompts']} | {c['streams']} | {c['tokens']} | {c['wall_s']:.2f} | "
            f"{c['aggregate_tps']:.1f} | {c['aggregate_tps'] / one:.2f} | "
            f"{c['ttft_p50_ms']:.0f} / {c['ttft_p95_ms']:.0f} |"
        )
    lines += [
        "",
        "Concurrent requests to one model are batched in its worker (engine/runtimes/"
        "onnx_batch.py): each is prefilled on its own, then every decode step runs all of them.",
        "",
    ]
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--concurrency-tokens", type=int, default=64)
    ap.add_argument("--markdown", type=Path, help="also write the results as markdown here")
    args = ap.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from tests.support.models import build_default_model
        from tests.support.paths import TEST_BUILD_ROOT

        model_dir = build_default_model(TEST_BUILD_ROOT)[1]

    import onnxruntime_genai as og

    cfg = og.Config(str(model_dir))
    cfg.clear_providers()
    opts = {"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads}}}}
    cfg.overlay(json.dumps(opts))
    model = og.Model(cfg)
    tokenizer = og.Tokenizer(model)

    home = Path(tempfile.mkdtemp(prefix="ingot-bench-rest-"))
    proc, url = start_server(home, args.threads)
    try:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            reg = {"path": str(model_dir), "name": "bench-model"}
            async with http.post(url + "/ingot/v1/models/register", json=reg) as r:
                assert r.status == 200, await r.text()
            async with http.post(url + "/ingot/v1/models/bench-model/load", json={"ttl": -1}) as r:
                assert r.status == 200, await r.text()
            bare_run(og, model, tokenizer, 8)  # warm both paths up
            await sse_run(http, url, 8)
            bare: list[dict[str, float]] = []
            sse: list[dict[str, float]] = []
            for i in range(args.reps):
                await settle()
                bare.append(bare_run(og, model, tokenizer, args.tokens, unseen(i)))
                await settle()
                sse.append(await sse_run(http, url, args.tokens, unseen(i)))
            # The model's worker builds its batching session the first time requests overlap
            # (they take turns meanwhile): pay that once, outside the measurement.
            await concurrent(http, url, 2, 8)
            await asyncio.sleep(2.0)
            levels = [int(x) for x in args.concurrency.split(",") if x]
            conc = [
                await concurrent(http, url, k, args.concurrency_tokens, same)
                for same in (False, True)
                for k in levels
            ]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    res: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "model": model_dir.name if model_dir.name != "onnx" else "SmolLM2-135M-Instruct int8",
        "prompt_tokens": len(
            tokenizer.encode(
                tokenizer.apply_chat_template(json.dumps(unseen(0)), add_generation_prompt=True)
            )
        ),
        "tokens": args.tokens,
        "threads": args.threads,
        "reps": args.reps,
        "bare": {k: med(bare, k) for k in ("ttft_ms", "decode_tps")},
        "sse": {
            k: med(sse, k) for k in ("ttft_ms", "decode_tps", "server_ttft_ms", "server_decode_tps")
        },
        "concurrency": conc,
        "runs": {"bare": bare, "sse": sse},
    }
    for name, runs in (("bare", bare), ("sse", sse)):
        res[name]["best_ttft_ms"] = min(r["ttft_ms"] for r in runs)
        res[name]["best_decode_tps"] = max(r["decode_tps"] for r in runs)
    res["decode_ratio"] = res["sse"]["decode_tps"] / res["bare"]["decode_tps"]
    res["best_decode_ratio"] = res["sse"]["best_decode_tps"] / res["bare"]["best_decode_tps"]
    res["ttft_overhead_ms"] = res["sse"]["ttft_ms"] - res["bare"]["ttft_ms"]
    res["best_ttft_overhead_ms"] = res["sse"]["best_ttft_ms"] - res["bare"]["best_ttft_ms"]
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(res), encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
