"""Engine settings: where the Ingot home is, default TTL, memory budget, threads, queue limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_TTL_S = 600.0


def default_home() -> Path:
    env = os.environ.get("INGOT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ingot"


@dataclass(frozen=True)
class EngineConfig:
    """Everything the composition root needs. Values come from the caller, then env, then defaults."""

    home: Path = field(default_factory=default_home)
    default_ttl_s: float = DEFAULT_TTL_S
    # Bytes the loader may fill with loaded models; None = derived from the hardware profile.
    memory_budget_bytes: int | None = None
    # Generation threads per model; None = all cores.
    threads: int | None = None
    # Requests that may wait per model before EngineBusy.
    queue_limit: int = 16
    # Extra catalog files (JSON, same schema as the shipped one) merged over the shipped catalog.
    extra_catalogs: tuple[Path, ...] = ()
    # Opt-ins such as "vllm-cpu" that make otherwise hidden variants available.
    opt_ins: frozenset[str] = frozenset()
    # Interpreter with the compile toolchain (defaults to the engine's own).
    compile_python: str | None = None
    # Interpreter with vLLM (scripts/setup_vllm.sh makes one); None = .cache/vllm-venv in the
    # checkout, else <home>/vllm-venv.
    vllm_python: str | None = None
    # Seconds a vLLM server may take to answer /health before the load fails.
    vllm_load_timeout_s: float = 600.0
    telemetry_interval_s: float = 1.0
    telemetry_history: int = 600

    @property
    def vllm_preferences(self) -> Path:
        """Per-model vLLM settings that override the planner (see engine/runtimes/vllm_prefs.py)."""
        return self.home / "vllm.json"

    @property
    def cache_pointer(self) -> Path:
        """A file in the home that records where the cache lives after `ingot cache cd`."""
        return self.home / "cache-location"

    def with_overrides(self, **changes: Any) -> EngineConfig:
        kept = {k: v for k, v in changes.items() if v is not None}
        if "home" in kept:
            kept["home"] = Path(kept["home"]).expanduser()
        return replace(self, **kept)

    @staticmethod
    def from_env(**overrides: Any) -> EngineConfig:
        env: dict[str, Any] = {}
        if v := os.environ.get("INGOT_DEFAULT_TTL"):
            env["default_ttl_s"] = float(v)
        if v := os.environ.get("INGOT_THREADS"):
            env["threads"] = int(v)
        if v := os.environ.get("INGOT_MEMORY_BUDGET_MB"):
            env["memory_budget_bytes"] = int(float(v) * 1024 * 1024)
        if v := os.environ.get("INGOT_CATALOGS"):
            env["extra_catalogs"] = tuple(Path(p) for p in v.split(os.pathsep) if p)
        if v := os.environ.get("INGOT_OPT_IN"):
            env["opt_ins"] = frozenset(s.strip() for s in v.split(",") if s.strip())
        if v := os.environ.get("INGOT_COMPILE_PYTHON"):
            env["compile_python"] = v
        if v := os.environ.get("INGOT_VLLM_PYTHON"):
            env["vllm_python"] = v
        if v := os.environ.get("INGOT_VLLM_LOAD_TIMEOUT"):
            env["vllm_load_timeout_s"] = float(v)
        return EngineConfig().with_overrides(**env).with_overrides(**overrides)
