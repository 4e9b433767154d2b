"""`ingot bench`: measure a model in the service.

Time to first token, prefill and decode tokens/s, aggregate tokens/s per concurrency level, p50/p95
latencies and the service's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from engine.errors import IngotError
from server.cli.client import ChatOutcome, ChatTurn, CliError, EngineClient
from server.cli.context import CliContext
from server.cli.http import HttpClient
from server.cli.model_cmd import download_model
from server.cli.render import human_bytes, note, print_fields, print_json, print_table, say

FILLER = "The quick brown fox jumps over the lazy dog. "
FILLER_TOKENS = 10  # a first guess (a token per word and the full stop); then measured
TASK = "Now write a long story about a fox, a dog and a river. Do not stop early."


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        levels = []
    if not levels or any(n < 1 or n > 256 for n in levels):
        raise CliError(
            f"--concurrency '{text}' is not a list of numbers from 1 to 256.",
            hint="For example --concurrency 1,2,4.",
            exit_code=2,
        )
    return levels


def make_prompt(sentences: int) -> str:
    return (FILLER * max(0, sentences) + TASK).strip()


async def sized_prompt(client: EngineClient, model: str, tokens: int) -> str:
    """A prompt of about `tokens` tokens once the chat template is applied: measured with the
    service's tokenizer where it can count, else estimated."""
    guess = max(0, (tokens - 40) // FILLER_TOKENS)
    if not isinstance(client, HttpClient):
        return make_prompt(guess)

    async def count(n: int) -> int:
        return await client.count_tokens(model, [{"role": "user", "content": make_prompt(n)}])

    probe_n = max(guess, 10)
    try:
        base, probe = await count(0), await count(probe_n)
    except IngotError:
        return make_prompt(guess)
    per_sentence = (probe - base) / probe_n
    if per_sentence <= 0:
        return make_prompt(guess)
    return make_prompt(round((tokens - base) / per_sentence))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: with few samples it stays a measured value)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values) if values else None,
    }


@dataclass
class Sample:
    outcome: ChatOutcome
    ttft_ms: float  # measured here: what a client feels, HTTP included
    latency_ms: float
    client_decode_tps: float | None  # tokens after the first over the time they took to arrive


class RssWatcher:
    """Samples the service's resident memory (with its child processes) in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingot-bench-rss", daemon=True)

    def _rss(self) -> int:
        import psutil

        try:
            p = psutil.Process(self.pid)
            procs = [p, *p.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for q in procs:
            try:
                total += int(q.memory_info().rss)
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssWatcher:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


async def one_request(client: EngineClient, turn: ChatTurn) -> Sample:
    t0 = time.perf_counter()
    stamps: list[float] = []

    def on_text(_: str) -> None:
        stamps.append(time.perf_counter())

    outcome = await client.chat(turn, on_text)
    t1 = time.perf_counter()
    ttft = ((stamps[0] if stamps else t1) - t0) * 1000
    # A server that reports no usage gets one token per streamed chunk (what llama.cpp sends).
    tokens = outcome.completion_tokens or len(stamps)
    if outcome.completion_tokens == 0:
        outcome = replace(outcome, completion_tokens=tokens)
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    decode = (tokens - 1) / span if span > 0 and tokens > 1 else None
    return Sample(outcome, ttft, (t1 - t0) * 1000, decode)


async def run_level(
    client: EngineClient, turn: ChatTurn, concurrency: int, rounds: int
) -> dict[str, Any]:
    async def worker() -> list[Sample | BaseException]:
        out: list[Sample | BaseException] = []
        for _ in range(rounds):
            try:
                out.append(await one_request(client, turn))
            except Exception as e:
                out.append(e)
        return out

    t0 = time.perf_counter()
    results = await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    flat = [r for rs in results for r in rs]
    samples = [r for r in flat if isinstance(r, Sample)]
    errors = [r for r in flat if not isinstance(r, Sample)]
    tokens = sum(s.outcome.completion_tokens for s in samples)
    return {
        "concurrency": concurrency,
        "requests": len(flat),
        "errors": len(errors),
        "firstError": str(errors[0]) if errors else None,
        "wallS": wall,
        "completionTokens": tokens,
        "promptTokens": summary([float(s.outcome.prompt_tokens) for s in samples])["mean"],
        "ttftMs": summary([s.ttft_ms for s in samples]),
        "latencyMs": summary([s.latency_ms for s in samples]),
        "prefillTps": summary([s.outcome.prefill_tps for s in samples if s.outcome.prefill_tps]),
        "decodeTps": summary([s.outcome.decode_tps for s in samples if s.outcome.decode_tps]),
        "clientDecodeTps": summary([s.client_decode_tps for s in samples if s.client_decode_tps]),
        "aggregateTps": tokens / wall if wall > 0 else None,
    }


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def level_row(r: dict[str, Any]) -> list[str]:
    # Decode is the engine's own measure where the server reports it, else the client's.
    decode = r["decodeTps"]["mean"] or r["clientDecodeTps"]["mean"]
    return [
        str(r["concurrency"]),
        str(r["requests"] - r["errors"]),
        _num(r["ttftMs"]["p50"]),
        _num(r["ttftMs"]["p95"]),
        _num(r["prefillTps"]["mean"], "{:.1f}"),
        _num(decode, "{:.1f}"),
        _num(r["aggregateTps"], "{:.1f}"),
        _num(r["latencyMs"]["p50"]),
        _num(r["latencyMs"]["p95"]),
    ]


async def compare_model(other: HttpClient, name: str | None) -> str:
    """The model to ask the other server for: --compare-model, or the first one it lists."""
    try:
        ids = await other.openai_models()
    except (CliError, IngotError) as e:
        raise CliError(
            f"Cannot use {other.where} to compare with: {e.message}",
            hint="Start that server first, or check the URL (e.g. http://127.0.0.1:8080).",
        ) from e
    if name:
        return name
    if not ids:
        raise CliError(f"{other.where} lists no models.", hint="Name one with --compare-model.")
    return ids[0]


def ratios(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ingot / the other server, level by level (decode as both clients saw it)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    return [
        {
            "concurrency": a["concurrency"],
            "decode": ratio(a["clientDecodeTps"]["p50"], b["clientDecodeTps"]["p50"]),
            "ttft": ratio(a["ttftMs"]["p50"], b["ttftMs"]["p50"]),
            "aggregate": ratio(a["aggregateTps"], b["aggregateTps"]),
        }
        for a, b in zip(ours, theirs, strict=True)
    ]


def bench(ctx: CliContext, args: argparse.Namespace) -> int:
    levels = parse_levels(args.concurrency)
    if args.tokens < 1 or args.prompt_tokens < 1 or args.rounds < 1:
        raise CliError(
            "--tokens, --prompt-tokens and --rounds must be at least 1.",
            hint="For example --tokens 64 --prompt-tokens 128 --rounds 2.",
            exit_code=2,
        )
    other: HttpClient | None = None
    other_name = ""
    if args.compare:
        # Checked first: a wrong URL should not cost a whole benchmark of Ingot to find out.
        other = HttpClient(args.compare)
        other_name = ctx.run(compare_model(other, args.compare_model))
    client = ctx.client(need_service=True)
    from server.cli.launcher import find_service

    st = find_service(ctx.home)
    if st is None:
        raise CliError("The service stopped during the benchmark.", hint="`ingot service logs`.")
    mi = download_model(ctx, args.model, quiet_if_cached=True)
    loaded = ctx.run(client.load(mi.id, None, lambda _: None))
    params: dict[str, Any] = {"max_tokens": args.tokens, "temperature": 0.0, "seed": 1}
    prompt = ctx.run(sized_prompt(client, loaded.id, args.prompt_tokens))
    turn = ChatTurn(loaded.id, [{"role": "user", "content": prompt}], params)
    note(f"Benchmarking {loaded.id} at {client.where}: warming up...")
    ctx.run(one_request(client, ChatTurn(turn.model, turn.messages, {"max_tokens": 4})))
    results: list[dict[str, Any]] = []
    with RssWatcher(st.pid) as rss:
        for c in levels:
            note(f"concurrency {c}: {c * args.rounds} requests...")
            results.append(ctx.run(run_level(client, turn, c, args.rounds)))
    report: dict[str, Any] = {
        "model": loaded.id,
        "url": client.where,
        "maxTokens": args.tokens,
        "promptTokensRequested": args.prompt_tokens,
        "rounds": args.rounds,
        "levels": results,
        "peakRssBytes": rss.peak,
    }
    theirs: list[dict[str, Any]] = []
    if other is not None:
        name = other_name
        # The same prompt text and parameters, so both servers see the same work.
        other_turn = ChatTurn(name, turn.messages, dict(params))
        note(f"Comparing with {name} at {other.where}: warming up...")
        ctx.run(one_request(other, ChatTurn(name, turn.messages, {"max_tokens": 4})))
        for c in levels:
            note(f"{other.where}, concurrency {c}: {c * args.rounds} requests...")
            theirs.append(ctx.run(run_level(other, other_turn, c, args.rounds)))
        ctx.run(other.close())
        report["compare"] = {"url": other.where, "model": name, "levels": theirs}
        report["ratios"] = ratios(results, theirs)
    failed = sum(r["errors"] for r in results + theirs)
    if ctx.json:
        print_json(report)
    else:
        print_fields(
            [
                ("model", loaded.id),
                ("service", client.where),
                ("prompt", f"{_num(results[0]['promptTokens'])} tokens"),
                ("max tokens", str(args.tokens)),
                ("peak RSS", human_bytes(rss.peak)),
            ]
        )
        say("")
        rows = [level_row(r) for r in results]
        cols = [
            "CONCURRENCY",
            "OK",
            "TTFT P50 MS",
            "TTFT P95 MS",
            "PREFILL TOK/S",
            "DECODE TOK/S",
            "AGGREGATE TOK/S",
            "LATENCY P50 MS",
            "LATENCY P95 MS",
        ]
        print_table(cols, rows, right=cols)
        if theirs:
            say("")
            say(f"{report['compare']['model']} at {report['compare']['url']}:")
            print_table(cols, [level_row(r) for r in theirs], right=cols)
            say("")
            rcols = ["CONCURRENCY", "DECODE x", "TTFT x", "AGGREGATE x"]
            rrows = [
                [
                    str(r["concurrency"]),
                    _num(r["decode"], "{:.2f}"),
                    _num(r["ttft"], "{:.2f}"),
                    _num(r["aggregate"], "{:.2f}"),
                ]
                for r in report["ratios"]
            ]
            say("Ingot / the other server (decode and TTFT as each client saw them):")
            print_table(rcols, rrows, right=rcols)
    if failed:
        first = next(r["firstError"] for r in results + theirs if r["errors"])
        raise CliError(
            f"{failed} request(s) failed; the first: {first}", hint="`ingot service logs`."
        )
    return 0
