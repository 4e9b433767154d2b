"""Where vLLM preferences come from: the catalog entry's `extra.vllm` and the user's `vllm.json`.

The user's file (`<home>/vllm.json`) looks like
`{"defaults": {...}, "models": {"<alias, name or id>": {...}}}`, each `{...}` holding fields of
VllmPreferences (gpu_memory_utilization, max_model_len, max_num_seqs, dtype, enforce_eager,
tensor_parallel_size, kv_cache_space_gib, extra_args, env). Later sources win.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from engine.catalog.variant import KvShape, ModelVariant
from engine.errors import InvalidRequest
from engine.runtimes.vllm_plan import VllmPreferences


def load_preferences(path: Path | None, variant: ModelVariant) -> VllmPreferences:
    """The catalog's `extra.vllm`, then the user's `<home>/vllm.json` ("defaults", then the entry
    under the variant's id, name or alias in "models")."""
    prefs = VllmPreferences()
    if isinstance(cat := variant.extra.get("vllm"), Mapping):
        prefs = VllmPreferences.from_dict(cat, f"the catalog entry of {variant.id}").over(prefs)
    if path is None or not path.is_file():
        return prefs
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidRequest(
            f"Cannot read the vLLM preferences {path}: {e}.", hint="Fix or remove the file."
        ) from e
    if isinstance(d := data.get("defaults"), Mapping):
        prefs = VllmPreferences.from_dict(d, f"{path} (defaults)").over(prefs)
    models = data.get("models") or {}
    for key in (variant.alias, variant.name, variant.id):
        if isinstance(m := models.get(key), Mapping):
            prefs = VllmPreferences.from_dict(m, f"{path} ({key})").over(prefs)
    return prefs


def kv_from_folder(folder: Path) -> KvShape | None:
    """The KV shape from a Hugging Face config.json, for variants whose catalog entry has none."""
    try:
        hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return KvShape.from_hf_config(hf) if isinstance(hf, dict) else None
    except (OSError, ValueError, TypeError):
        return None
