"""Encoder: an ONNX sentence encoder with its own tokenizer, run with ONNX Runtime in batches.

Used by the embedding worker process and by the compile child's fidelity check, so both measure
exactly what requests get. onnxruntime and tokenizers are imported when an Encoder is made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.runtimes.embedding_pooling import (
    BATCH_SIZE,
    MODEL_FILE,
    TOKENIZER_FILE,
    EmbeddingConfig,
    Floats,
    l2_normalize,
    length_batches,
    pad_batch,
    pool,
)


class Halted(Exception):
    """The request was cancelled between two batches."""


@dataclass(frozen=True)
class TooLong:
    """Input `index` has `tokens` tokens, more than the model takes."""

    index: int
    tokens: int


@dataclass(frozen=True)
class BadToken:
    """Input `index` holds the token id `token`, outside the vocabulary."""

    index: int
    token: int


class Encoder:
    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = EmbeddingConfig.load(folder)
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # tokenizer.json may carry the training setup (pad to 128, cut at 128): requests get the
        # model's own limit instead, and padding is done per batch.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._cutting = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._cutting.no_padding()
        self._cutting.enable_truncation(self.config.max_tokens)
        self.vocab_size = int(self._tokenizer.get_vocab_size())
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        """Token ids with the model's special tokens ([CLS] … [SEP]), as sentence-transformers
        makes them; cut to the model's limit only when `truncate`."""
        rows = [list(e.ids) for e in self._tokenizer.encode_batch(list(texts))]
        if truncate:
            long = [i for i, r in enumerate(rows) if len(r) > self.config.max_tokens]
            if long:
                cut = self._cutting.encode_batch([texts[i] for i in long])
                for i, e in zip(long, cut, strict=True):
                    rows[i] = list(e.ids)
        return rows

    def check(self, rows: Sequence[Sequence[int]], *, truncate: bool) -> TooLong | BadToken | None:
        """The first input the model cannot take, if any (token arrays come from the client)."""
        limit = self.config.max_tokens
        for i, row in enumerate(rows):
            if len(row) > limit and not truncate:
                return TooLong(i, len(row))
            bad = next((t for t in row if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                return BadToken(i, bad)
        return None

    def encode(
        self,
        rows: Sequence[Sequence[int]],
        *,
        batch_size: int = BATCH_SIZE,
        halted: Callable[[], bool] = lambda: False,
    ) -> Floats:
        """[N, dimensions] float32 vectors, pooled (and normalised) as the model's config says.
        Inputs run in batches of similar length; `halted` is checked between batches."""
        cfg = self.config
        out = np.zeros((len(rows), cfg.dimensions), dtype=np.float32)
        for batch in length_batches(rows, batch_size):
            if halted():
                raise Halted
            ids, mask = pad_batch([rows[i][: cfg.max_tokens] for i in batch], cfg.pad_id)
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            vectors = pool(hidden, mask, cfg.pooling)
            out[batch] = l2_normalize(vectors) if cfg.normalize else vectors
        return out
