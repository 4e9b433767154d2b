"""Benchmark: Predicted Outputs (speculative edits) against the same request without a prediction.

An editor's Edit Selection sends the selected code as the prediction: the model's rewrite keeps
most of it, and the worker verifies several of its tokens per forward pass. Each case runs the
same greedy request with and without a prediction, interleaved (without, with, without, ...) in
one engine, and reports medians of the engine's own decode tokens/s, their ratio, whether the
text was identical, and the prediction tokens accepted and rejected. Cases:

- `rewrite`: an edit instruction whose answer keeps most of the code, the code as prediction
  (as Edit Selection sends it);
- `exact`: the answer itself as the prediction (the upper bound);
- `useless`: unrelated text as the prediction (the cost of a prediction that never matches).

    .venv/bin/python scripts/bench_predicted.py [--model-dir DIR] [--reps 7] [--tokens 160]

Without --model-dir it builds (or reuses) the default model (the exact GGUF import) in
.cache/test-models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The Edit Selection prompt (server/jsonrpc/handlers/generation.py) over a piece of code.
EDIT_SYSTEM = (
    "You rewrite text as instructed. Reply with only the rewritten text that replaces the "
    "selection: no explanations, no code fences."
)
CODE = """class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, count):
        if name in self.items:
            self.items[name] += count
        else:
            self.items[name] = count

    def remove(self, name, count):
        if name not in self.items:
            raise KeyError(name)
        self.items[name] -= count
        if self.items[name] <= 0:
            del self.items[name]

    def total(self):
        return sum(self.items.values())

    def report(self):
        for name, count in sorted(self.items.items()):
            print(name, count)
"""
# SmolLM2-135M answers this by copying the class (and, past its end, by making up an example:
# --tokens 160 stops about where the class ends).
INSTRUCTION = "Add type hints."
USELESS = (
    "The committee met on Tuesday to discuss the budget for the coming year. Several members "
    "raised concerns about the cost of the new library, and the chair asked for a revised "
    "estimate before the next meeting. "
) * 4


def messages(instruction: str, code: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": EDIT_SYSTEM},
        {"role": "user", "content": f"Instruction: {instruction}\n\nSelection:\n{code}"},
    ]


async def one(service: Any, msgs: list[dict[str, str]], n: int, prediction: str | None) -> Any:
    from engine.generation import SamplingParams
    from engine.requests import ChatRequest, GenerationResult

    params = SamplingParams(max_tokens=n, temperature=0, prediction=prediction)
    result = None
    async for ev in service.chat(ChatRequest("bench-model", msgs, params, priority=0)):
        if isinstance(ev, GenerationResult):
            result = ev
    assert result is not None
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("-o", "--output", choices=["text", "json"], default="text")
    args = ap.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from tests.support.exact_model import build_exact_model
        from tests.support.paths import TEST_BUILD_ROOT

        model_dir = build_exact_model(TEST_BUILD_ROOT)[1]

    from engine.bootstrap import build_engine
    from engine.config import EngineConfig

    home = Path(tempfile.mkdtemp(prefix="ingot-bench-"))
    service = build_engine(EngineConfig.from_env(home=home, threads=args.threads))
    await service.start()
    await service.register(model_dir, name="bench-model")
    msgs = messages(INSTRUCTION, CODE)
    try:
        reference = await one(service, msgs, args.tokens, None)
        cases = {"rewrite": CODE, "exact": reference.text, "useless": USELESS}
        for prediction in cases.values():  # warm-up: the batching and verifying sessions
            await one(service, msgs, args.tokens, prediction)
        await asyncio.sleep(2)  # let the verifier's background build finish
        rows: dict[str, dict[str, list[float]]] = {
            name: {"base": [], "pred": [], "acc": [], "rej": [], "same": []} for name in cases
        }
        for _ in range(args.reps):
            for name, prediction in cases.items():
                await asyncio.sleep(0.2)  # spinning thread pools of the last run settle
                base = await one(service, msgs, args.tokens, None)
                await asyncio.sleep(0.2)
                pred = await one(service, msgs, args.tokens, prediction)
                r = rows[name]
                r["base"].append(base.record.decode_tps or 0.0)
                r["pred"].append(pred.record.decode_tps or 0.0)
                r["acc"].append(pred.usage.accepted_prediction_tokens)
                r["rej"].append(pred.usage.rejected_prediction_tokens)
                r["same"].append(float(pred.text == base.text == reference.text))
        out: dict[str, Any] = {"completion_tokens": reference.usage.completion_tokens}
        for name, r in rows.items():
            ratios = [p / b for p, b in zip(r["pred"], r["base"], strict=True) if b]
            out[name] = {
                "base_tps": statistics.median(r["base"]),
                "pred_tps": statistics.median(r["pred"]),
                "ratio_of_medians": statistics.median(r["pred"]) / statistics.median(r["base"]),
                "paired_ratio": statistics.median(ratios),
                "accepted": statistics.median(r["acc"]),
                "rejected": statistics.median(r["rej"]),
                "identical": all(r["same"]),
            }
    finally:
        await service.close()
    if args.output == "json":
        print(json.dumps(out, indent=2))
        return
    print(f"{out['completion_tokens']} completion tokens, {args.reps} interleaved reps, greedy")
    print(
        "| case | decode tok/s without | with prediction | ratio (paired) | accepted | rejected "
        "| identical |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in cases:
        c = out[name]
        print(
            f"| {name} | {c['base_tps']:.1f} | {c['pred_tps']:.1f} | "
            f"{c['ratio_of_medians']:.2f}x ({c['paired_ratio']:.2f}x) | {c['accepted']:.0f} | "
            f"{c['rejected']:.0f} | {c['identical']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
