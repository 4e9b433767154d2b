"""Child steps for embedding models: export a sentence-transformers folder to ONNX, and measure it.

`python -m engine.compile.embeddings.child build --source ZIP_OR_DIR --out OUT --work WORK`
`python -m engine.compile.embeddings.child verify --source ZIP_OR_DIR --onnx DIR --work WORK`
torch and transformers are imported here only, in a child of the compile toolchain's Python.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from engine.compile.embeddings.build import COSINE_TARGET
from engine.compile.reporting import StepReporter, run_as_child
from engine.runtimes.embedding_pooling import (
    MODEL_FILE,
    TOKENIZER_FILE,
    EmbeddingConfig,
    cosine,
    l2_normalize,
    pool,
)

ONNX_OPSET = 17

# A fixed set of sentences as an editor's search sees them: prose, questions, code, symbols,
# accents, other scripts, one word and one sentence long enough to exercise padding.
SENTENCES = (
    "The lighthouse keeper woke before dawn, as he had every morning for thirty years.",
    "How do I read a file line by line in Python?",
    "def moving_average(values, window):\n    return sum(values[-window:]) / window",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "Fix the race condition in the cache eviction path when two workers unload at once.",
    "const total = items.reduce((sum, item) => sum + item.price * item.quantity, 0);",
    "A café in Zürich serves crème brûlée and naïve espresso.",
    "東京は日本の首都です。",
    "rust",
    "Embeddings map text to vectors so that similar meanings land close together, which lets "
    "an editor find the functions, comments and documents that answer a question even when "
    "they share no words with it, and that is why every assistant that searches a workspace "
    "needs a small, fast and faithful embedding model running locally on the machine.",
    "ERROR 2024-05-01T12:00:03Z worker-3 connection reset by peer (errno 104)",
    "git rebase --onto main feature~3 feature",
)


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a model zip into `dest` (refusing absolute or escaping member names); returns
    the folder holding config.json (the zip's root or its only subfolder)."""
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            parts = PurePosixPath(name.replace("\\", "/"))
            if parts.is_absolute() or ".." in parts.parts:
                raise ValueError(f"{archive.name} names a file with an unsafe path: {name}")
        zf.extractall(dest)
    if (dest / "config.json").is_file():
        return dest
    found = sorted(p.parent for p in dest.rglob("config.json") if p.parent.parent == dest)
    if len(found) != 1:
        raise ValueError(f"{archive.name} holds no sentence-transformers folder (no config.json)")
    return found[0]


def source_folder(source: Path, work: Path) -> Path:
    """The sentence-transformers folder: `source` itself, or extracted from it into `work`."""
    if source.is_dir():
        return source
    work.mkdir(parents=True, exist_ok=True)
    return safe_extract(source, work / "source")


def reference_vectors(hf_dir: Path, sentences: list[str], config: EmbeddingConfig) -> Any:
    """What sentence-transformers computes: the transformers tokenizer (padding, cut at
    max_seq_length), the encoder in float32 torch, then the model's pooling and normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModel.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    batch = tokenizer(
        sentences,
        padding=True,
        truncation=True,
        max_length=config.max_tokens,
        return_tensors="pt",
    )
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state.numpy()
    vectors = pool(hidden, batch["attention_mask"].numpy(), config.pooling)
    return l2_normalize(vectors) if config.normalize else vectors


def export_onnx(hf_dir: Path, path: Path) -> None:
    """The encoder as an ONNX graph with dynamic batch and sequence axes, token states out."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(
        str(hf_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            # The additive mask is built here from plain tensor ops: transformers' own mask
            # helpers branch on Python values, which a trace would freeze at the example's shape.
            keep = attention_mask[:, None, None, :].to(torch.float32)
            additive = (1.0 - keep) * torch.finfo(torch.float32).min
            out = self.inner(
                input_ids=input_ids, attention_mask=additive, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    # A padded example batch of two lengths, so nothing shape-specific is traced.
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 7592, 2088, 2088, 102]])
    mask = (ids != 0).to(torch.long)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        Encoder(model),
        (ids, mask, torch.zeros_like(ids)),
        str(path),
        dynamo=False,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "token_type_ids": axes,
            "last_hidden_state": axes,
        },
        opset_version=ONNX_OPSET,
    )


def measure(
    onnx_dir: Path, hf_dir: Path, threads: int, report: StepReporter, start: float
) -> dict[str, Any]:
    """Cosine of the ONNX model's vectors (as the worker computes them) with the reference's."""
    from engine.runtimes.embedding_encoder import Encoder

    config = EmbeddingConfig.load(onnx_dir)
    sentences = list(SENTENCES)
    report.progress(start, "Computing the reference vectors with torch")
    reference = reference_vectors(hf_dir, sentences, config)
    report.progress(start + (1 - start) / 2, "Computing the vectors with ONNX Runtime")
    encoder = Encoder(onnx_dir, threads)
    rows = encoder.tokenize(sentences, truncate=True)
    began = time.monotonic()
    vectors = encoder.encode(rows)
    onnx_s = time.monotonic() - began
    sims = cosine(reference, vectors)
    return {
        "min_cosine": float(sims.min()),
        "mean_cosine": float(sims.mean()),
        "sentences": len(sentences),
        "tokens": sum(len(r) for r in rows),
        "dimensions": int(vectors.shape[1]),
        "onnx_seconds": round(onnx_s, 3),
    }


def build(
    source: Path, out: Path, work: Path, threads: int, report: StepReporter
) -> dict[str, Any]:
    report.progress(0.02, "Reading the sentence-transformers folder")
    hf_dir = source_folder(source, work)
    config = EmbeddingConfig.from_sentence_transformers(hf_dir)
    import torch

    torch.set_num_threads(threads)
    report.progress(0.1, "Exporting the encoder to ONNX")
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(hf_dir, out / MODEL_FILE)
    shutil.copy2(hf_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    config.save(out)
    # The export changes the traced model in place; the check loads a fresh one.
    details = measure(out, hf_dir, threads, report, 0.6)
    if details["min_cosine"] < COSINE_TARGET:
        raise RuntimeError(
            f"the exported model's vectors differ from the reference (lowest cosine "
            f"{details['min_cosine']:.5f}, target {COSINE_TARGET})"
        )
    report.progress(1.0, f"Exported; lowest cosine with the reference {details['min_cosine']:.6f}")
    return {**details, "pooling": config.pooling, "normalize": config.normalize}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.compile.embeddings.child")
    parser.add_argument("command", choices=("build", "verify"))
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    source, work = args.source.resolve(), args.work.resolve()

    def body(report: StepReporter) -> dict[str, Any]:
        if args.command == "build":
            if args.out is None:
                raise ValueError("build needs --out")
            return build(source, args.out.resolve(), work, args.threads, report)
        if args.onnx is None:
            raise ValueError("verify needs --onnx")
        report.progress(0.02, "Reading the sentence-transformers folder")
        started = time.monotonic()
        details = measure(
            args.onnx.resolve(), source_folder(source, work), args.threads, report, 0.1
        )
        return {**details, "seconds": round(time.monotonic() - started, 2)}

    return run_as_child(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
