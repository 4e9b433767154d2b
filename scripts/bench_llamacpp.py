"""Benchmark: Ingot vs. llama.cpp's server on the same weights (the default model's Q4_1 GGUF).

In one run, interleaved so machine noise hits every path: a bare onnxruntime-genai loop on the
exact import; Ingot's JSON-RPC engine (stdio, as an editor runs it) on the exact import; Ingot's
REST server (SSE) serving the exact GGUF import and the builder's int8 build; and
llama-cpp-python's OpenAI server on the GGUF itself. Reports TTFT (~60-token chat
prompt that shares only the chat template's 24-token system prompt with the prompts before it,
which both Ingot's prompt cache and llama-cpp-python's reuse of its last prompt reuse; and
cold, behind a system prompt seen once), prefill tok/s (a ~530-token prompt, sharing the same
24 tokens), decode tok/s, peak RSS of the
process that holds the model, aggregate tok/s at concurrency 1/4/8, and the ONNX models' KL
fidelity.

    bash scripts/setup_llamacpp.sh            # once: compiles llama.cpp (~26 min on 2 cores)
    .venv/bin/python scripts/bench_llamacpp.py [--reps 5] [--tokens 128] [--threads 2] [-o json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
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

from scripts.bench_rest import MESSAGES, bare_run, settle, start_server, unseen  # noqa: E402

LLAMA_PYTHON = REPO / ".cache" / "llamacpp-venv" / "bin" / "python"
LONG = [{"role": "user", "content": "Summarise this text. " + "The river runs to the sea. " * 70}]


def numbered(messages: list[dict[str, str]], i: int) -> list[dict[str, str]]:
    """`messages` with the user's text starting "{i}. ": it shares the chat template's system
    prompt and user header (27 tokens) with any other prompt here and no more, so Ingot's prompt
    cache (several prompts) and llama-cpp-python (its last prompt) can reuse the same amount."""
    *head, last = messages
    return [*head, {**last, "content": f"{i}. {last['content']}"}]


def builder_int4(hf: Path, threads: int) -> Path:
    """The model builder's int4 build of the same weights (re-quantised: KL ~0.4, but the
    fastest decode), built once into the test-model cache."""
    from engine.compile import Compiler
    from engine.progress import CancelToken, no_progress
    from tests.support.models import build_key
    from tests.support.paths import TEST_BUILD_ROOT

    out = TEST_BUILD_ROOT / "builder-int4" / build_key()
    if not (out / "genai_config.json").is_file():
        print("bench_llamacpp: building the builder's int4 model (once)", file=sys.stderr)
        Compiler().hf_to_onnx(
            hf,
            out,
            precision="int4",
            extra_options={"prune_lm_head": "true"},
            work_dir=out.with_name(out.name + ".work"),
            threads=threads,
            progress=no_progress,
            cancel=CancelToken(),
        )
    return out


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stream(
    http: aiohttp.ClientSession, url: str, model: str, messages: list[dict[str, str]], n: int
) -> dict[str, float]:
    """One streamed chat; times are taken as each content chunk arrives at the client. Ingot
    sends the tokens of up to 100 ms per chunk, so tokens are counted from the usage chunk where
    the server sends one (a first chunk always holds the first token alone), else one a chunk
    (llama.cpp sends a chunk per token)."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": n,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    stamps: list[float] = []
    usage = 0
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            buf = line.strip()
            if not buf.startswith(b"data: {"):
                continue
            chunk = json.loads(buf[6:])
            delta = chunk.get("choices") or []
            if delta and (delta[0].get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
            usage = int((chunk.get("usage") or {}).get("completion_tokens") or usage)
    count = usage or len(stamps)
    decode = (count - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {"ttft_ms": (stamps[0] - t0) * 1000, "decode_tps": decode, "n": count}


class RpcEngine:
    """Ingot's JSON-RPC engine (`python -m server` over stdio, as an editor runs it)."""

    def __init__(self, home: Path, threads: int) -> None:
        self.home, self.threads = home, threads
        self.client: Any = None
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, model_dir: Path) -> None:
        from scripts.bench_jsonrpc import start_engine

        self.proc, c = await start_engine(self.home, self.threads)
        self.client = c
        await c.request("ingot/model/register", {"path": str(model_dir), "name": "exact"})
        await c.request("ingot/model/load", {"model": "exact", "ttl": -1})

    async def stream(self, messages: list[dict[str, str]], n: int) -> dict[str, float]:
        """Times taken as the partial results arrive; each carries the token count."""
        c = self.client
        token = f"b{c.next_id + 1}"
        t0 = time.perf_counter()
        params = {
            "model": "exact",
            "messages": messages,
            "maxTokens": n,
            "temperature": 0,
            "partialResultToken": token,
        }
        result = await c.request("ingot/chat", params)
        got = c.partials.pop(token)
        (t1, v1), (t2, v2) = got[0], got[-1]
        decode = (v2["tokens"] - v1["tokens"]) / (t2 - t1) if t2 > t1 else 0.0
        n_out = int(result["usage"]["completionTokens"])
        return {"ttft_ms": (t1 - t0) * 1000, "decode_tps": decode, "n": n_out}

    async def concurrent(self, k: int, n: int) -> float:
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(self.stream(MESSAGES, n) for _ in range(k)))
        return sum(r["n"] for r in runs) / (time.perf_counter() - t0)

    async def worker_pid(self) -> int:
        info = await self.client.request("ingot/model/info", {"model": "exact"})
        return int(info["runtimeInfo"]["pid"])

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await self.client.request("shutdown")
            self.client.notify("exit")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 20)
        if self.proc.returncode is None:
            self.proc.kill()


async def prompt_tokens(http: aiohttp.ClientSession, url: str, model: str) -> int:
    body = {"model": model, "messages": LONG, "max_tokens": 1, "temperature": 0}
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        return int((await r.json())["usage"]["prompt_tokens"])


async def concurrent(http: aiohttp.ClientSession, url: str, model: str, k: int, n: int) -> float:
    t0 = time.perf_counter()
    runs = await asyncio.gather(*(stream(http, url, model, MESSAGES, n) for _ in range(k)))
    return sum(r["n"] for r in runs) / (time.perf_counter() - t0)


def start_llama(gguf: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    if not LLAMA_PYTHON.exists():
        raise SystemExit("llama-cpp-python is not installed: run `bash scripts/setup_llamacpp.sh`.")
    port = free_port()
    argv = [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf)]
    argv += ["--model_alias", "llama", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--n_threads", str(threads), "--n_ctx", "4096", "--chat_format", "chatml"]
    # By default a new request interrupts the running one: queue them instead, as Ingot does.
    argv += ["--interrupt_requests", "False", "--verbose", "False"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"llama.cpp's server exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("llama.cpp's server did not start")


def med(xs: list[dict[str, float]], key: str) -> float:
    return statistics.median(x[key] for x in xs)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--concurrency-tokens", type=int, default=64)
    ap.add_argument("--no-fidelity", action="store_true", help="skip the KL measurement")
    ap.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = ap.parse_args()

    from engine.compile import locate_pypi_file, measure_fidelity
    from tests.support.exact_model import build_exact_model
    from tests.support.models import GGUF_FILE, GGUF_PACKAGE, GGUF_VERSION, build_default_model
    from tests.support.paths import TEST_BUILD_ROOT

    hf, int8_dir = build_default_model(TEST_BUILD_ROOT)
    _, exact_dir = build_exact_model(TEST_BUILD_ROOT)
    int4_dir = builder_int4(hf, args.threads)
    gguf = locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION)

    import onnxruntime_genai as og

    cfg = og.Config(str(exact_dir))
    cfg.clear_providers()
    so = {"intra_op_num_threads": args.threads}
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": so}}}))
    bare_model = og.Model(cfg)
    bare_tok = og.Tokenizer(bare_model)

    home = Path(tempfile.mkdtemp(prefix="ingot-bench-llamacpp-"))
    ingot, ingot_url = start_server(home, args.threads)
    llama, llama_url = start_llama(gguf, args.threads)
    # A home of its own: an engine in the same home would forward to the REST server instead.
    rpc = RpcEngine(Path(tempfile.mkdtemp(prefix="ingot-bench-llamacpp-rpc-")), args.threads)
    paths = {
        "ingot-exact": (ingot_url, "exact"),
        "ingot-int8": (ingot_url, "int8"),
        "ingot-int4": (ingot_url, "int4"),
        "llama.cpp": (llama_url, "llama"),
    }
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "threads": args.threads,
        "tokens": args.tokens,
        "reps": args.reps,
    }
    try:
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for name, folder in (("exact", exact_dir), ("int8", int8_dir), ("int4", int4_dir)):
                reg = {"path": str(folder), "name": name}
                async with http.post(ingot_url + "/ingot/v1/models/register", json=reg) as r:
                    assert r.status == 200, await r.text()
                async with http.post(
                    f"{ingot_url}/ingot/v1/models/{name}/load", json={"ttl": -1}
                ) as r:
                    assert r.status == 200, await r.text()
            await rpc.start(exact_dir)
            for url, model in paths.values():  # warm up
                await stream(http, url, model, MESSAGES, 8)
            await rpc.stream(MESSAGES, 8)
            bare_run(og, bare_model, bare_tok, 8)
            # Each Ingot worker builds its batching session the first time requests overlap.
            await concurrent(http, ingot_url, "exact", 2, 8)
            await concurrent(http, ingot_url, "int8", 2, 8)
            await concurrent(http, ingot_url, "int4", 2, 8)
            await rpc.concurrent(2, 8)
            await asyncio.sleep(2.0)
            runs: dict[str, list[dict[str, float]]] = {
                k: [] for k in ("bare", "ingot-jsonrpc-exact", *paths)
            }
            prefill: dict[str, list[float]] = {k: [] for k in paths}
            # TTFT of a prompt nobody has seen (a fresh system prompt each time).
            ttft_cold: dict[str, list[float]] = {k: [] for k in runs}
            fresh = iter(range(10**6))
            n_long = {k: await prompt_tokens(http, url, m) for k, (url, m) in paths.items()}
            for _ in range(args.reps):
                await settle()
                runs["bare"].append(bare_run(og, bare_model, bare_tok, args.tokens))
                ttft_cold["bare"].append(runs["bare"][-1]["ttft_ms"])  # never reuses
                await settle()
                runs["ingot-jsonrpc-exact"].append(
                    await rpc.stream(numbered(MESSAGES, next(fresh)), args.tokens)
                )
                await settle()
                got = await rpc.stream(unseen(next(fresh)), 2)
                ttft_cold["ingot-jsonrpc-exact"].append(got["ttft_ms"])
                # As on the other paths: the next prompt follows a long one.
                await rpc.stream(numbered(LONG, next(fresh)), 1)
                for name, (url, model) in paths.items():
                    await settle()
                    warm = numbered(MESSAGES, next(fresh))
                    runs[name].append(await stream(http, url, model, warm, args.tokens))
                    await settle()
                    got = await stream(http, url, model, unseen(next(fresh)), 2)
                    ttft_cold[name].append(got["ttft_ms"])
                    await settle()
                    first = await stream(http, url, model, numbered(LONG, next(fresh)), 1)
                    prefill[name].append(n_long[name] / (first["ttft_ms"] / 1000))
            conc: dict[str, dict[int, float]] = {k: {} for k in (*paths, "ingot-jsonrpc-exact")}
            for k in (1, 4, 8):
                for name, (url, model) in paths.items():
                    conc[name][k] = await concurrent(http, url, model, k, args.concurrency_tokens)
                conc["ingot-jsonrpc-exact"][k] = await rpc.concurrent(k, args.concurrency_tokens)
            rpc_pid = await rpc.worker_pid()
            async with http.get(ingot_url + "/ingot/v1/status") as r:
                loaded = {m["alias"]: m["runtimeInfo"]["pid"] for m in (await r.json())["loaded"]}
        rss = {
            "ingot-exact": peak_rss(loaded["exact"]),
            "ingot-int8": peak_rss(loaded["int8"]),
            "ingot-int4": peak_rss(loaded["int4"]),
            "llama.cpp": peak_rss(llama.pid),
            "ingot-jsonrpc-exact": peak_rss(rpc_pid),
        }
    finally:
        await rpc.stop()
        for proc in (ingot, llama):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["paths"] = {
        name: {
            "ttft_ms": med(rs, "ttft_ms"),
            "ttft_cold_ms": statistics.median(ttft_cold[name]),
            "decode_tps": med(rs, "decode_tps"),
            **(
                {
                    "prefill_tps": statistics.median(prefill[name]),
                    "prompt_tokens_long": n_long[name],
                    "peak_rss_mb": rss[name] / 2**20,
                    "aggregate_tps": conc[name],
                }
                if name in paths
                else {"peak_rss_mb": rss[name] / 2**20, "aggregate_tps": conc[name]}
                if name in conc
                else {}
            ),
        }
        for name, rs in runs.items()
    }
    if not args.no_fidelity:
        for name, folder in (
            ("ingot-exact", exact_dir),
            ("ingot-int8", int8_dir),
            ("ingot-int4", int4_dir),
        ):
            report = measure_fidelity(folder, hf, threads=args.threads)
            result["paths"][name]["mean_kl"] = report.mean_kl
    lc, ex, i8, i4 = (
        result["paths"][k] for k in ("llama.cpp", "ingot-exact", "ingot-int8", "ingot-int4")
    )
    result["vs_llamacpp"] = {
        "exact_decode_ratio": ex["decode_tps"] / lc["decode_tps"],
        "exact_ttft_ratio": ex["ttft_ms"] / lc["ttft_ms"],
        "exact_ttft_cold_ratio": ex["ttft_cold_ms"] / lc["ttft_cold_ms"],
        "int8_decode_ratio": i8["decode_tps"] / lc["decode_tps"],
        "int8_ttft_ratio": i8["ttft_ms"] / lc["ttft_ms"],
        "int8_ttft_cold_ratio": i8["ttft_cold_ms"] / lc["ttft_cold_ms"],
        "int4_decode_ratio": i4["decode_tps"] / lc["decode_tps"],
        "int4_ttft_ratio": i4["ttft_ms"] / lc["ttft_ms"],
    }
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['machine']}, {args.threads} threads, {args.tokens} tokens, median of {args.reps}"
    )
    hdr = f"{'path':20} {'TTFT ms':>8} {'cold':>6} {'prefill t/s':>12} {'decode t/s':>11}"
    hdr += f" {'peak RSS MB':>12}"
    print(hdr + f" {'agg@1':>7} {'agg@4':>7} {'agg@8':>7} {'KL':>8}")
    for name, p in result["paths"].items():
        agg = p.get("aggregate_tps", {})
        print(
            f"{name:20} {p['ttft_ms']:8.1f} {p['ttft_cold_ms']:6.1f} "
            f"{p.get('prefill_tps', 0):12.0f} "
            f"{p['decode_tps']:11.1f} {p.get('peak_rss_mb', 0):12.0f} "
            + " ".join(f"{agg.get(k, 0):7.1f}" for k in (1, 4, 8))
            + (f" {p['mean_kl']:8.4f}" if "mean_kl" in p else "")
        )
    v = result["vs_llamacpp"]
    print(
        f"vs llama.cpp: exact import decode {v['exact_decode_ratio']:.2f}x, TTFT "
        f"{v['exact_ttft_ratio']:.2f}x (cold {v['exact_ttft_cold_ratio']:.2f}x); int8 decode "
        f"{v['int8_decode_ratio']:.2f}x, TTFT {v['int8_ttft_ratio']:.2f}x (cold "
        f"{v['int8_ttft_cold_ratio']:.2f}x); builder int4 decode {v['int4_decode_ratio']:.2f}x, "
        f"TTFT {v['int4_ttft_ratio']:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
