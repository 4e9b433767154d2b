"""Benchmark: tokens delivered to a JSON-RPC client over stdio vs. a bare onnxruntime-genai loop.

Starts the real engine (`python -m server`), registers the model folder, and interleaves bare and
JSON-RPC runs so noise hits both; times are taken where the client receives them (partial
results). Then keeps 8 generations streaming and measures `ingot/service/status` latency.

    .venv/bin/python scripts/bench_jsonrpc.py [--model-dir DIR] [--reps 5] [--tokens 128] [-o json]

`--flush-ms 50,100,200` instead compares how often the worker sends its tokens: one engine per
interval (INGOT_TOKEN_FLUSH_MS), all loaded, interleaved with the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_engine import PROMPT_MESSAGES, bare_run, unseen_prompt  # noqa: E402
from scripts.bench_rest import settle  # noqa: E402


class RawClient:
    """A minimal LSP-framed JSON-RPC client: no library overhead in the measurement."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.partials: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout
        while True:
            length = 0
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif line in (b"\r\n", b"\n"):
                    break
            msg = json.loads(await self.proc.stdout.readexactly(length))
            now = time.perf_counter()
            if msg.get("method") == "$/progress":
                p = msg["params"]
                self.partials.setdefault(p["token"], []).append((now, p["value"]))
            elif "id" in msg and "method" not in msg:
                fut = self.pending.pop(msg["id"], None)
                if fut and not fut.done():
                    fut.set_result(msg)

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        assert self.proc.stdin
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def request(self, method: str, params: Any = None) -> Any:
        self.next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        msg = await fut
        if "error" in msg:
            raise RuntimeError(msg["error"])
        return msg["result"]

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})


async def start_engine(
    home: Path, threads: int, **extra_env: str
) -> tuple[asyncio.subprocess.Process, RawClient]:
    """`python -m server` over stdio, as an editor runs it, initialized (no REST port)."""
    env = dict(
        os.environ,
        **extra_env,
        INGOT_HOME=str(home),
        INGOT_THREADS=str(threads),
        PYTHONPATH=str(REPO),
        INGOT_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    c = RawClient(proc)
    opts = {"restEnabled": False}
    init = {"processId": os.getpid(), "capabilities": {}, "initializationOptions": opts}
    await c.request("initialize", init)
    c.notify("initialized", {})
    return proc, c


async def rpc_run(c: RawClient, prompt: str, n: int, token: str) -> tuple[float, float, float]:
    """(TTFT ms, decode tok/s as the client saw the partial results, decode tok/s as the engine
    measured it in its telemetry)."""
    t0 = time.perf_counter()
    result = await c.request(
        "ingot/complete",
        {
            "model": "bench-model",
            "prompt": prompt,
            "maxTokens": n,
            "temperature": 0,
            "partialResultToken": token,
        },
    )
    got = c.partials[token]
    first, last = got[0][0], got[-1][0]
    client_tps = (got[-1][1]["tokens"] - got[0][1]["tokens"]) / (last - first)
    return (first - t0) * 1000, client_tps, float(result["telemetry"]["decodeTps"])


async def status_latency(c: RawClient, streams: int, tokens: int) -> dict[str, float]:
    gens = [
        asyncio.ensure_future(
            c.request(
                "ingot/chat",
                {
                    "model": "bench-model",
                    "messages": PROMPT_MESSAGES,
                    "maxTokens": tokens,
                    "temperature": 0,
                    "partialResultToken": f"conc-{i}",
                },
            )
        )
        for i in range(streams)
    ]
    await asyncio.sleep(0.5)
    lat = []
    while not all(g.done() for g in gens):
        t = time.perf_counter()
        await c.request("ingot/service/status")
        lat.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.02)
    await asyncio.gather(*gens)
    lat.sort()
    return {
        "samples": len(lat),
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max_ms": lat[-1],
    }


def bare_model(model_dir: Path, threads: int) -> tuple[Any, Any]:
    """The bare loop's og.Model and tokenizer, with the engine's thread count."""
    import onnxruntime_genai as og

    cfg = og.Config(str(model_dir))
    cfg.clear_providers()
    cfg.overlay(
        json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}})
    )
    model = og.Model(cfg)
    return model, og.Tokenizer(model)


async def compare_flush(model_dir: Path, args: argparse.Namespace, intervals: list[int]) -> None:
    """Decode tok/s as the client sees it, per flush interval, against the bare loop; each rep
    runs bare and then every engine once, so noise hits them alike."""
    engines = {}
    for ms in intervals:
        home = Path(tempfile.mkdtemp(prefix="ingot-bench-"))
        proc, c = await start_engine(home, args.threads, INGOT_TOKEN_FLUSH_MS=str(ms))
        await c.request("ingot/model/register", {"path": str(model_dir), "name": "bench-model"})
        await c.request("ingot/model/load", {"model": "bench-model", "ttl": -1})
        engines[ms] = (proc, c)
    model, tokenizer = bare_model(model_dir, args.threads)
    bare_run(model, tokenizer, unseen_prompt(tokenizer, 10_000), 8)
    for ms, (_, c) in engines.items():
        await rpc_run(c, unseen_prompt(tokenizer, 10_001 + ms), 8, f"warm-{ms}")
    bare: list[float] = []
    got: dict[int, list[float]] = {ms: [] for ms in engines}
    for i in range(args.reps):
        await settle()
        bare.append(bare_run(model, tokenizer, unseen_prompt(tokenizer, i), args.tokens)[1])
        for ms, (_, c) in engines.items():
            await settle()
            prompt = unseen_prompt(tokenizer, 1000 * (ms + 1) + i)
            got[ms].append((await rpc_run(c, prompt, args.tokens, f"f{ms}-{i}"))[1])
    for proc, c in engines.values():
        await c.request("shutdown")
        c.notify("exit")
        await proc.wait()
    base = statistics.median(bare)
    print(f"{args.tokens} generated, {args.threads} threads, median of {args.reps}")
    print(f"{'bare':>10} {base:8.1f} tok/s")
    for ms, xs in got.items():
        paired = statistics.median(x / b for x, b in zip(xs, bare, strict=True))
        print(
            f"{ms:>7} ms {statistics.median(xs):8.1f} tok/s  ratio {statistics.median(xs) / base:.3f}"
            f"  (paired {paired:.3f})"
        )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("-o", "--output", choices=["text", "json"], default="text")
    ap.add_argument("--flush-ms", help="compare token flush intervals, e.g. 50,100,200")
    args = ap.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from tests.support.models import build_default_model
        from tests.support.paths import TEST_BUILD_ROOT

        model_dir = build_default_model(TEST_BUILD_ROOT)[1]

    if args.flush_ms:
        await compare_flush(model_dir, args, [int(x) for x in args.flush_ms.split(",")])
        return

    proc, c = await start_engine(Path(tempfile.mkdtemp(prefix="ingot-bench-")), args.threads)
    await c.request("ingot/model/register", {"path": str(model_dir), "name": "bench-model"})
    await c.request("ingot/model/load", {"model": "bench-model", "ttl": -1})

    model, tokenizer = bare_model(model_dir, args.threads)
    prompt = tokenizer.apply_chat_template(json.dumps(PROMPT_MESSAGES), add_generation_prompt=True)

    bare_run(model, tokenizer, prompt, 8)
    await rpc_run(c, prompt, 8, "warm")
    bare, rpc = [], []
    for i in range(args.reps):
        # A prompt the engine's prompt cache has not seen, so both sides prefill all of it.
        fresh = unseen_prompt(tokenizer, i)
        await settle()
        bare.append(bare_run(model, tokenizer, fresh, args.tokens))
        await settle()
        rpc.append(await rpc_run(c, fresh, args.tokens, f"r{i}"))
    del model
    status = await status_latency(c, 8, 48)
    await c.request("shutdown")
    c.notify("exit")
    await proc.wait()

    def med(xs: list[tuple[float, ...]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    result = {
        "prompt_tokens": len(tokenizer.encode(unseen_prompt(tokenizer, 0))),
        "completion_tokens": args.tokens,
        "threads": args.threads,
        "reps": args.reps,
        "bare": {"ttft_ms": med(bare, 0), "decode_tps": med(bare, 1)},
        "jsonrpc": {"ttft_ms": med(rpc, 0), "decode_tps": med(rpc, 1)},
        "engine_measured_decode_tps": med(rpc, 2),
        "status_under_8_streams": status,
    }
    result["decode_ratio"] = result["jsonrpc"]["decode_tps"] / result["bare"]["decode_tps"]
    # Each rep's own ratio (bare and JSON-RPC back to back): steadier when the machine drifts.
    result["paired_decode_ratio"] = statistics.median(
        r[1] / b[1] for r, b in zip(rpc, bare, strict=True)
    )
    result["ttft_overhead_ms"] = result["jsonrpc"]["ttft_ms"] - result["bare"]["ttft_ms"]
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return
    b, r = result["bare"], result["jsonrpc"]
    print(
        f"prompt {result['prompt_tokens']} tokens, {args.tokens} generated, {args.threads} threads, median of {args.reps}"
    )
    print(f"{'':10} {'TTFT ms':>9} {'decode tok/s':>13}")
    print(f"{'bare':10} {b['ttft_ms']:9.1f} {b['decode_tps']:13.1f}")
    print(f"{'json-rpc':10} {r['ttft_ms']:9.1f} {r['decode_tps']:13.1f}")
    print(f"{'(engine)':10} {'':9} {result['engine_measured_decode_tps']:13.1f}")
    print(
        f"decode ratio {result['decode_ratio']:.3f} (paired {result['paired_decode_ratio']:.3f})"
        f"  TTFT overhead {result['ttft_overhead_ms']:+.1f} ms"
    )
    print(
        f"ingot/service/status with 8 streams: p50 {status['p50_ms']:.1f} ms, p99 {status['p99_ms']:.1f} ms, max {status['max_ms']:.1f} ms ({status['samples']} samples)"
    )


if __name__ == "__main__":
    asyncio.run(main())
