"""The JSON-RPC method registry: one `MethodSpec` per `ingot/*` method, the source the generator reads.

Modules that define methods call `register(...)` at import time and are listed in `METHOD_MODULES`;
importing this module imports them all, so `REGISTRY` is complete whichever module is imported
first (a method module imports `MethodSpec` from here, and this module imports it back).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

# Modules whose import registers methods. The generator and the tests see only what these register.
METHOD_MODULES: tuple[str, ...] = ("protocol.jsonrpc.methods", "protocol.jsonrpc.embeddings")

NAME_PATTERN = re.compile(r"ingot(/[a-z][A-Za-z0-9]*)+")

Kind = Literal["request", "notification"]
Direction = Literal["client->server", "server->client"]  # a constant of it needs `: Direction`


@dataclass(frozen=True)
class MethodSpec:
    """One JSON-RPC method: its wire types, errors, examples and docs."""

    name: str  # e.g. "ingot/model/load"
    kind: Kind
    direction: Direction
    summary: str  # one line
    params: type[BaseModel] | None
    result: type[BaseModel] | None  # None for notifications / null results
    errors: tuple[str, ...] = ()  # engine error kinds, e.g. ("model_not_found", "model_not_cached")
    progress: type[BaseModel] | None = None  # type of streamed partial results ($/progress value)
    example_params: dict[str, Any] | None = None  # wire form (camelCase)
    example_result: dict[str, Any] | None = None  # wire form (camelCase)
    doc: str = ""  # longer markdown

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"method name {self.name!r} must look like 'ingot/area/verb'")
        if self.kind not in ("request", "notification"):
            raise ValueError(f"{self.name}: kind must be 'request' or 'notification'")
        if self.direction not in ("client->server", "server->client"):
            raise ValueError(f"{self.name}: direction must be 'client->server' or 'server->client'")
        if not self.summary or "\n" in self.summary:
            raise ValueError(f"{self.name}: summary must be one non-empty line")
        if self.kind == "notification" and (
            self.result is not None or self.progress is not None or self.example_result is not None
        ):
            raise ValueError(f"{self.name}: a notification has no result and no progress")
        if self.params is None and self.example_params is not None:
            raise ValueError(f"{self.name}: example_params given but the method has no params")
        if self.result is None and self.example_result is not None:
            raise ValueError(f"{self.name}: example_result given but the method has no result")
        if isinstance(self.errors, str):
            raise ValueError(f"{self.name}: errors must be a tuple of kinds, not a string")


REGISTRY: list[MethodSpec] = []  # sorted by name
# Wire types that no method names but clients still need (e.g. `initializationOptions`).
EXTRA_TYPES: list[type[BaseModel]] = []


def register(*specs: MethodSpec, types: Iterable[type[BaseModel]] = ()) -> None:
    """Add methods (and extra wire types) to the registry; call it from a module in METHOD_MODULES."""
    frame = inspect.currentframe()
    caller = frame.f_back.f_globals.get("__name__") if frame and frame.f_back else None
    if caller is not None and caller not in METHOD_MODULES:
        raise RuntimeError(
            f"{caller} registers methods but is not in protocol.registry.METHOD_MODULES; add it "
            "there so the generator and the tests see its methods"
        )
    known = {s.name for s in REGISTRY}
    for spec in specs:
        if spec.name in known:
            raise ValueError(f"method {spec.name} is registered twice")
        known.add(spec.name)
        REGISTRY.append(spec)
    REGISTRY.sort(key=lambda s: s.name)
    for model in types:
        if model not in EXTRA_TYPES:
            EXTRA_TYPES.append(model)


def method(name: str) -> MethodSpec:
    """The spec of `name`; KeyError (listing the known methods) when it is not registered."""
    for spec in REGISTRY:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown method {name!r}; registered: {', '.join(s.name for s in REGISTRY)}")


for _module in METHOD_MODULES:
    importlib.import_module(_module)
