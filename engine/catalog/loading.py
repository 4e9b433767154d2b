"""Reading catalog data files (the shipped one, extra ones, user registrations) into ModelVariants."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from engine.catalog.variant import (
    BuildRecipe,
    Capabilities,
    KvShape,
    ModelSource,
    ModelVariant,
)
from engine.errors import IngotError

SCHEMA = 1


def variant_from_dict(d: dict[str, Any]) -> ModelVariant:
    d = dict(d)
    src = dict(d.pop("source"))
    if "patterns" in src:
        src["patterns"] = tuple(src["patterns"])
    build = d.pop("build", None)
    caps = d.pop("capabilities", None)
    kv = d.pop("kv", None)
    return ModelVariant(
        source=ModelSource(**src),
        build=BuildRecipe(**build) if build else None,
        capabilities=Capabilities(**caps) if caps else Capabilities(),
        kv=KvShape(**kv) if kv else None,
        **d,
    )


def variant_to_dict(v: ModelVariant) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(v)
    d["source"]["patterns"] = list(v.source.patterns)
    return {k: val for k, val in d.items() if val is not None}


def load_catalog_file(path: Path) -> list[ModelVariant]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IngotError(
            f"Cannot read the catalog file {path}: {e}.",
            hint="Fix or remove the file (see INGOT_CATALOGS).",
        ) from e
    return parse_catalog(data, str(path))


def parse_catalog(data: Any, origin: str) -> list[ModelVariant]:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise IngotError(f"The catalog {origin} is not an Ingot catalog (schema {SCHEMA}).")
    out = []
    for i, entry in enumerate(data.get("variants", [])):
        try:
            out.append(variant_from_dict(entry))
        except (TypeError, KeyError, ValueError) as e:
            raise IngotError(f"Catalog {origin}, variant #{i}: {e}.") from e
    return out


def load_shipped_catalog() -> list[ModelVariant]:
    text = resources.files("engine.catalog").joinpath("catalog.json").read_text(encoding="utf-8")
    return parse_catalog(json.loads(text), "engine/catalog/catalog.json")
