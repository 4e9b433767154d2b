"""ModelCatalog: every known variant (shipped, extra catalogs, registered) and Foundry-style resolution."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock

from engine.catalog.loading import (
    SCHEMA,
    load_catalog_file,
    load_shipped_catalog,
    parse_catalog,
    variant_to_dict,
)
from engine.catalog.variant import ModelVariant
from engine.errors import InvalidRequest, ModelNotFound
from engine.hardware import HardwareProfile

DEVICE_RANK = {"cuda": 0, "cpu": 1}
# What a registered model may be called (--name, --alias): it becomes part of folder names and of
# ids (`name:version`, so no colon), and people type it.
REGISTRATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = (
    "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(no spaces, slashes or colons)"
)
FRAMEWORK_RANK = {"onnx": 0, "vllm": 1}


class RegistrationStore:
    """Bring-your-own models, persisted as a catalog file in the Ingot home."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")

    def load(self) -> list[ModelVariant]:
        if not self.path.exists():
            return []
        return parse_catalog(json.loads(self.path.read_text(encoding="utf-8")), str(self.path))

    def save(self, variants: Iterable[ModelVariant]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"schema": SCHEMA, "variants": [variant_to_dict(v) for v in variants]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, v: ModelVariant) -> None:
        with self._lock:
            rest = [x for x in self.load() if x.id != v.id]
            self.save([*rest, v])

    def remove(self, variant_id: str) -> bool:
        with self._lock:
            current = self.load()
            rest = [x for x in current if x.id != variant_id]
            self.save(rest)
            return len(rest) != len(current)


class ModelCatalog:
    def __init__(
        self,
        shipped: list[ModelVariant],
        extra_files: Iterable[Path] = (),
        registrations: RegistrationStore | None = None,
    ) -> None:
        self._base: dict[str, ModelVariant] = {}
        for v in shipped:
            self._base[v.id] = v
        for f in extra_files:
            for v in load_catalog_file(f):
                self._base[v.id] = v
        self.registrations = registrations

    @classmethod
    def default(
        cls, extra_files: Iterable[Path] = (), registrations: RegistrationStore | None = None
    ) -> ModelCatalog:
        return cls(load_shipped_catalog(), extra_files, registrations)

    def all(self) -> list[ModelVariant]:
        merged = dict(self._base)
        if self.registrations:
            for v in self.registrations.load():
                merged[v.id] = v
        return list(merged.values())

    def check_registration(
        self, variant_id: str, alias: str, *, hint: str = "Register it under another --name."
    ) -> None:
        """Refuse a registration (or a compile or import, which register what they make) whose
        id, name or alias is one a catalog model answers to: it would answer to clients that ask
        for the catalog model, or hide it. Compared without case, as people type names."""
        name = variant_id.rsplit(":", 1)[0]
        taken: dict[str, ModelVariant] = {}
        for v in self._base.values():
            for word in (v.id, v.name, v.alias):
                taken.setdefault(word.lower(), v)
        for word, param in ((variant_id, "name"), (name, "name"), (alias, "alias")):
            owner = taken.get(word.lower())
            if owner is not None:
                raise InvalidRequest(
                    f"'{word}' is taken by the catalog model {owner.id} (its id, name or alias).",
                    hint=hint,
                    param=param,
                )

    def get(self, variant_id: str) -> ModelVariant | None:
        return next((v for v in self.all() if v.id == variant_id), None)

    def is_registered(self, variant_id: str) -> bool:
        return bool(self.registrations) and any(
            v.id == variant_id for v in (self.registrations.load() if self.registrations else [])
        )

    def matching(self, name: str) -> list[ModelVariant]:
        """Variants a user-typed name can mean: exact id, then name (any version), then alias."""
        name = name.strip()
        everything = self.all()
        exact = [v for v in everything if v.id == name]
        if exact:
            return exact
        by_name = [v for v in everything if v.name == name]
        if by_name:
            return by_name
        return [v for v in everything if v.alias == name]

    def resolve(
        self,
        name: str,
        *,
        hardware: HardwareProfile,
        is_cached: Callable[[ModelVariant], bool],
        runtime_available: Callable[[ModelVariant], bool],
        offered: Callable[[ModelVariant], bool],
    ) -> ModelVariant:
        """Foundry Local's rules: an exact id wins; else among the variants of a name or alias that
        this machine can run: a cached one, then one whose runtime is installed, then the best
        device (CUDA before CPU), ONNX before vLLM, newest version."""
        validate_model_name(name)
        candidates = self.matching(name)
        if not candidates:
            raise ModelNotFound(
                f"No model named '{name}' in the catalog.",
                hint=self._suggest(name),
                model=name,
                suggestions=self.suggestions(name),
            )
        if len(candidates) == 1 and candidates[0].id == name.strip():
            return candidates[0]
        runnable = [v for v in candidates if offered(v)] or candidates
        return min(
            runnable,
            key=lambda v: (
                not is_cached(v),
                not runtime_available(v),
                DEVICE_RANK.get(v.device, 9) if v.device in hardware.devices() else 9,
                FRAMEWORK_RANK.get(v.framework, 9),
                -v.version,
            ),
        )

    def suggestions(self, name: str) -> list[str]:
        names = sorted({v.alias for v in self.all()} | {v.id for v in self.all()})
        return difflib.get_close_matches(name, names, n=3, cutoff=0.5)

    def _suggest(self, name: str) -> str:
        close = self.suggestions(name)
        if close:
            return (
                f"Did you mean {', '.join(repr(c) for c in close)}? `ingot model list` shows all."
            )
        return "Run `ingot model list` to see the catalog."


def check_registration_name(value: str, param: str) -> None:
    """A --name or --alias a user gives a model of their own: InvalidRequest saying what is
    allowed, otherwise."""
    if not REGISTRATION_NAME.fullmatch(value):
        raise InvalidRequest(
            f"{value[:80]!r} cannot be a model {param}.",
            hint=f"Use {NAME_RULE}.",
            param=param,
        )


def validate_model_name(name: str) -> None:
    """Names become folder names: refuse anything that could escape the cache."""
    if (
        not name
        or len(name) > 200
        or ".." in name
        or "\\" in name
        or name.startswith(("/", "."))
        or any(ord(c) < 32 for c in name)
    ):
        raise InvalidRequest(
            f"'{name[:80]}' is not a valid model name.",
            hint="Use a catalog alias or id such as 'smollm2-135m'.",
            param="model",
        )
