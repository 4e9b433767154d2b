"""A GGUF file's tensors matched to the float32 Hugging Face folder made from it, bit for bit."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.compile.gguf_blocks import EXACT_TYPES, NBitsWeight, decode
from engine.compile.gguf_blocks import dequantize as ggml_dequantize

FLOAT_TYPES = ("F32", "F16", "BF16")


def gguf_field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None or not f.data:
        return None
    value = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(value).decode("utf-8", "replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def inspect(gguf: Path) -> dict[str, Any]:
    """The GGUF's architecture and tensor types; raises naming any type nothing here can read."""
    import gguf as gguf_lib
    from gguf import quants

    # The types gguf can dequantise (what transformers' GGUF loader relies on); private API.
    dequantisable: Any = getattr(quants, "_type_traits", None)
    reader = gguf_lib.GGUFReader(str(gguf))
    types: Counter[str] = Counter()
    linear: Counter[str] = Counter()
    unreadable: dict[str, list[str]] = {}
    untied = any(t.name == "output.weight" for t in reader.tensors)
    for t in reader.tensors:
        name = t.tensor_type.name
        types[name] += 1
        # An untied embedding is only gathered from: any type of it is kept exact (float32).
        if len(t.shape) >= 2 and not (untied and t.name == "token_embd.weight"):
            linear[name] += 1
        readable = name in FLOAT_TYPES or dequantisable is None or t.tensor_type in dequantisable
        if not readable:
            unreadable.setdefault(name, []).append(t.name)
    if unreadable:
        listed = "; ".join(f"{k} ({len(v)} tensors, e.g. {v[0]})" for k, v in unreadable.items())
        raise ValueError(
            f"{gguf.name} holds tensor types that cannot be dequantised here: {listed}. "
            f"Exact import supports {', '.join(EXACT_TYPES)}; other types need a version of the "
            "gguf package that can dequantise them."
        )
    return {
        "architecture": gguf_field(reader, "general.architecture"),
        "types": dict(types),
        "linear_types": dict(linear),
    }


# -- the Hugging Face reference weights ------------------------------------------------------------


class HFWeights:
    """Tensors of a (possibly sharded) safetensors Hugging Face folder, read one at a time."""

    def __init__(self, hf_dir: Path) -> None:
        from safetensors import safe_open

        index = hf_dir / "model.safetensors.index.json"
        if index.is_file():
            names = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(names.values()))
        else:
            files = ["model.safetensors"]
        self._files: dict[str, Any] = {f: safe_open(str(hf_dir / f), framework="np") for f in files}
        self._where = {k: f for f, h in self._files.items() for k in h.keys()}  # noqa: SIM118
        config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
        self.config: dict[str, Any] = config.get("text_config") or config

    def get(self, name: str) -> NDArray[np.float32] | None:
        f = self._where.get(name)
        if f is None and name == "lm_head.weight":  # tied: saved once, as the embedding
            f, name = self._where.get("model.embed_tokens.weight"), "model.embed_tokens.weight"
        return None if f is None else np.asarray(self._files[f].get_tensor(name), np.float32)


def row_orders(rows: int, config: dict[str, Any]) -> list[NDArray[np.intp] | None]:
    """Candidate row orders from GGUF to HF: as stored, or llama.cpp's q/k rotary permutation undone."""
    orders: list[NDArray[np.intp] | None] = [None]
    for key in ("num_attention_heads", "num_key_value_heads"):
        heads = config.get(key)
        if isinstance(heads, int) and heads > 0 and rows % (2 * heads) == 0:
            idx = np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(2, 1)
            orders.append(idx.reshape(-1))
    return orders


def exact_weight(tensor: Any, hf: HFWeights, hf_name: str) -> NBitsWeight:
    """A GGUF tensor's blocks, rows in HF order, checked bit for bit against the HF folder."""
    qtype = tensor.tensor_type.name
    reference = ggml_dequantize(tensor.data, qtype)
    target = hf.get(hf_name)
    if target is None:
        raise RuntimeError(
            f"the Hugging Face folder has no {hf_name} to check {tensor.name} against"
        )
    if target.shape == reference.shape:
        for order in row_orders(reference.shape[0], hf.config):
            if np.array_equal(reference if order is None else reference[order], target):
                weight = decode(tensor.data, qtype)
                return weight if order is None else weight.take_rows(order)
    raise RuntimeError(
        f"the GGUF tensor {tensor.name} ({qtype}, {list(reference.shape)}) does not match {hf_name} "
        f"of the Hugging Face folder ({list(target.shape)}) in any known row order; was the folder "
        "converted from this GGUF file?"
    )
