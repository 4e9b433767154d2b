"""Benchmark: tokens delivered to a JSON-RPC client over stdio vs. a bare onnxruntime-genai loop.

Starts the real engine (`python -m server`), registers the model folder, and interleaves bare and
JSON-RPC runs so noise hits both; times are taken where the client receives them (partial
results). Then keeps 8 generations streaming and measures `ingot/service/status` latency.

    .venv/bin/python scripts/bench_jsonrpc.py [--model-dir DIR] [--reps 5] [--tokens 128] [-o json]
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


async def start_engine(home: Path, threads: int) -> tuple[asyncio.subprocess.Process, RawClient]:
    """`python -m server` over stdio, as an editor runs it, initialized (no REST port)."""
    env = dict(
        os.environ,
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

    proc, c = await start_engine(Path(tempfile.mkdtemp(prefix="ingot-bench-")), args.threads)
    await c.request("ingot/model/register", {"path": str(model_dir), "name": "bench-model"})
    await c.request("ingot/model/load", {"model": "bench-model", "ttl": -1})

    cfg = og.Config(str(model_dir))
    cfg.clear_providers()
    cfg.overlay(
        json.dumps(
            {"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads}}}}
        )
    )
    model = og.Model(cfg)
    tokenizer = og.Tokenizer(model)
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
        f"decode ratio {result['decode_ratio']:.3f}  TTFT overhead {result['ttft_overhead_ms']:+.1f} ms"
    )
    print(
        f"ingot/service/status with 8 streams: p50 {status['p50_ms']:.1f} ms, p99 {status['p99_ms']:.1f} ms, max {status['max_ms']:.1f} ms ({status['samples']} samples)"
    )


if __name__ == "__main__":
    asyncio.run(main())
