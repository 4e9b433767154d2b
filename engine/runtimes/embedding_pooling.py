"""Sentence-embedding arithmetic shared by the worker and the compile child: pooling, L2, batching."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# The file a built embedding folder carries beside model.onnx and tokenizer.json.
CONFIG_FILE = "embedding_config.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
# sentence-transformers' default encode() batch size: the most inputs the worker runs at once.
BATCH_SIZE = 32
# ... and the most padded tokens: on a CPU, batches of long inputs run slower per input than
# smaller ones (164 HumanEval prompts of ~136 tokens, 2 threads: 24 inputs/s with no token cap,
# 55 with this one; 512 short lines: 200 -> 250).
BATCH_TOKENS = 512

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EmbeddingConfig:
    """How to turn the encoder's token states into one vector (from the model's own config)."""

    dimensions: int
    pooling: str = "mean"
    normalize: bool = True
    max_tokens: int = 256
    pad_id: int = 0

    def save(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", "utf-8")

    @classmethod
    def load(cls, folder: Path) -> EmbeddingConfig:
        data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if config.pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling mode {config.pooling!r}")
        return config

    @classmethod
    def from_sentence_transformers(cls, folder: Path) -> EmbeddingConfig:
        """Read a sentence-transformers folder: 1_Pooling/config.json (the pooling mode),
        modules.json (a Normalize module means L2-normalised vectors) and
        sentence_bert_config.json (max_seq_length)."""
        pooling_dir = "1_Pooling"
        modules = _json(folder / "modules.json", [])
        for module in modules:
            if str(module.get("type", "")).endswith(".Pooling"):
                pooling_dir = str(module.get("path") or pooling_dir)
        pooling = _json(folder / pooling_dir / "config.json", {})
        hf = _json(folder / "config.json", {})
        bert = _json(folder / "sentence_bert_config.json", {})
        mode = next(
            (m for m in POOLING_MODES if pooling.get(f"pooling_mode_{m}_tokens")),
            "cls" if pooling.get("pooling_mode_cls_token") else "mean",
        )
        normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
        positions = int(hf.get("max_position_embeddings") or 512)
        return cls(
            dimensions=int(pooling.get("word_embedding_dimension") or hf["hidden_size"]),
            pooling=mode,
            normalize=normalize,
            max_tokens=min(int(bert.get("max_seq_length") or positions), positions),
            pad_id=int(hf.get("pad_token_id") or 0),
        )


def _json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def pool(hidden: Floats, mask: Ints, mode: str) -> Floats:
    """[B, T, H] token states and a [B, T] attention mask -> [B, H], as sentence-transformers'
    Pooling module does (padding never counts)."""
    m = mask.astype(np.float32)[..., None]
    if mode == "cls":
        return np.asarray(hidden[:, 0, :], dtype=np.float32)
    if mode == "max":
        masked = np.where(m > 0, hidden, np.float32(-1e9))
        return np.asarray(masked.max(axis=1), dtype=np.float32)
    total = (hidden * m).sum(axis=1)
    count = np.clip(m.sum(axis=1), 1e-9, None)
    if mode == "mean_sqrt_len":
        return np.asarray(total / np.sqrt(count), dtype=np.float32)
    if mode != "mean":
        raise ValueError(f"unknown pooling mode {mode!r}")
    return np.asarray(total / count, dtype=np.float32)


def l2_normalize(vectors: Floats) -> Floats:
    """Unit-length rows (torch.nn.functional.normalize's eps keeps a zero row at zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Ints, Ints]:
    """Right-pad token rows to the longest: (input_ids, attention_mask), both [B, T] int64."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def length_batches(
    rows: Sequence[Sequence[int]], size: int = BATCH_SIZE, max_tokens: int = BATCH_TOKENS
) -> list[list[int]]:
    """Indexes of `rows` grouped into batches of similar length (longest first), at most `size`
    rows and `max_tokens` padded tokens each (a longer row goes alone); callers put the results
    back in input order."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first: the batch's first row sets its padded width.
        if current and (
            len(current) >= size or len(rows[current[0]]) * (len(current) + 1) > max_tokens
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def cosine(a: Floats, b: Floats) -> Floats:
    """Row-wise cosine similarity of two [N, H] arrays."""
    return np.asarray((l2_normalize(a) * l2_normalize(b)).sum(axis=1), dtype=np.float32)
