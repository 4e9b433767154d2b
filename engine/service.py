"""EngineService: the one façade the JSON-RPC server, the REST server and the CLI use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.cache import ModelCache
from engine.cache_dest import check_cache_destination
from engine.catalog.catalog import ModelCatalog, check_registration_name
from engine.catalog.fit import check_fit
from engine.catalog.variant import CHAT_TASK, EMBEDDINGS_TASK, Device, ModelVariant
from engine.chat import check_text, prepare_chat
from engine.clock import Clock
from engine.compile.embeddings.build import EmbeddingFidelityReport
from engine.compile.fidelity import FidelityReport
from engine.config import EngineConfig
from engine.embeddings import EmbeddingRequest, EmbeddingResult, run_embedding
from engine.errors import (
    Cancelled,
    IngotError,
    InvalidRequest,
    ModelBusy,
    ModelNotCached,
    RuntimeUnavailable,
)
from engine.events import EventBus, ModelStateEvent
from engine.generate import PromptPlan, check_prompt_chars, run_generation
from engine.hardware import HardwareProfile, probe_hardware
from engine.jobs import ProvisioningJobs
from engine.loader import TtlLoader
from engine.progress import CancelToken, Progress, ProgressCallback, no_progress
from engine.provisioning import (
    Provisioner,
    StateCallback,
    compiled_id,
    imported_id,
    precision_of,
    slug,
)
from engine.remote_attach import RemoteAttacher
from engine.remotes import RemoteKeyStore, RemoteView
from engine.requests import ChatRequest, CompletionRequest, GenerationStreamEvent
from engine.runtimes.base import ModelInstance
from engine.scheduler import PRIORITY_CHAT
from engine.selector import RuntimeSelector
from engine.telemetry import Telemetry
from engine.views import CacheInfo, EngineStatus, ModelView

T = TypeVar("T")
log = logging.getLogger(__name__)

FIM_SYSTEM = (
    "You fill in missing text. The user shows text with a <CURSOR> marker. Reply with only the "
    "text that belongs at the cursor: no explanations, no code fences, nothing repeated."
)


class EngineService:
    def __init__(
        self,
        *,
        config: EngineConfig,
        hardware: HardwareProfile,
        catalog: ModelCatalog,
        cache: ModelCache,
        provisioner_factory: Callable[[EngineService], Provisioner],
        runtimes: RuntimeSelector,
        telemetry: Telemetry,
        events: EventBus[ModelStateEvent],
        clock: Clock,
        memory_budget: int,
        version: str,
    ) -> None:
        self.config = config
        self._hardware = hardware
        self.catalog = catalog
        self.cache = cache
        self.runtimes = runtimes
        self.telemetry = telemetry
        self.events = events
        self.clock = clock
        self.version = version
        self.started_at = clock.wall()
        self.provisioner = provisioner_factory(self)
        self.jobs = ProvisioningJobs()
        self._metrics_task: asyncio.Task[None] | None = None
        self.loader = TtlLoader(
            runtime_for=runtimes.for_variant,
            folder_for=self.provisioner.folder_for,
            clock=clock,
            events=events,
            memory_budget=memory_budget,
            default_ttl_s=config.default_ttl_s,
            threads=config.threads,
            queue_limit=config.queue_limit,
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loader.start()
        self.telemetry.start()
        if self._metrics_task is None:
            self._metrics_task = asyncio.create_task(self._poll_runtime_metrics())
        # A build killed mid-way (a crash, a power cut) leaves its scratch, maybe gigabytes,
        # where `cache info` does not count it; a build another process runs holds its lock.
        try:
            await asyncio.to_thread(self.cache.clear_stale_builds)
        except (OSError, IngotError) as e:  # an unwritable cache must not stop the engine
            log.warning("could not clear stale build folders in %s: %s", self.cache.root, e)

    async def close(self) -> None:
        await self.jobs.close()
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_task
            self._metrics_task = None
        await self.loader.close()
        await self.telemetry.close()

    async def _poll_runtime_metrics(self) -> None:
        """Fold each loaded runtime's own metrics (vLLM's /metrics) into what status shows."""
        while True:
            for entry in self.loader.loaded():
                try:
                    # A stalled runtime must not freeze the other models' metrics.
                    async with asyncio.timeout(2.0):
                        await entry.instance.runtime_metrics()
                except Exception as e:  # a metrics hiccup never takes the engine down
                    log.debug("runtime metrics of %s failed: %s", entry.variant.id, e)
            await asyncio.sleep(self.config.telemetry_interval_s)

    # -- hardware and catalog ------------------------------------------------------------------
    def hardware(self, refresh: bool = False) -> HardwareProfile:
        if refresh:
            self._hardware = probe_hardware()
        return self._hardware

    def view(self, v: ModelVariant) -> ModelView:
        entry = self.loader.get_loaded(v.id)
        present = self.provisioner.is_present(v)
        exp = entry.expires_at() if entry else None
        return ModelView(
            variant=v,
            cached=present,
            path=self.provisioner.folder_for(v) if present else None,
            loaded=entry is not None,
            loading=self.loader.is_loading(v.id),
            fit=check_fit(v, self._hardware, self.config.opt_ins),
            runtime_unavailable=self.runtimes.unavailable_reason(v),
            ttl_s=entry.ttl_s if entry else None,
            expires_in_s=None if exp is None else max(0.0, exp - self.clock.monotonic()),
            memory_bytes=entry.memory_bytes if entry else None,
            active_requests=len(entry.active) if entry else 0,
            queued_requests=entry.scheduler.queued if entry else 0,
            registered=self.catalog.is_registered(v.id),
            runtime_info=entry.instance.describe() if entry else None,
        )

    def list_models(
        self,
        *,
        device: str | None = None,
        task: str | None = None,
        runtime: str | None = None,
        cached_only: bool = False,
        fits_only: bool = False,
        include_all: bool = False,
    ) -> list[ModelView]:
        out = []
        for v in self.catalog.all():
            if device and v.device != device:
                continue
            if task and v.task != task:
                continue
            if runtime and runtime not in (v.runtime, v.framework):
                continue
            view = self.view(v)
            if cached_only and not view.cached:
                continue
            if fits_only and not view.fit.fits:
                continue
            if not include_all and not view.offered and not view.cached:
                continue
            out.append(view)
        return sorted(out, key=lambda m: (m.variant.alias, m.variant.name))

    def resolve(self, name: str) -> ModelVariant:
        return self.catalog.resolve(
            name,
            hardware=self._hardware,
            is_cached=self.provisioner.is_present,
            runtime_available=lambda v: self.runtimes.unavailable_reason(v) is None,
            offered=lambda v: check_fit(v, self._hardware, self.config.opt_ins).runnable,
        )

    def model_info(self, name: str) -> ModelView:
        return self.view(self.resolve(name))

    # -- cache, download, compile, register ------------------------------------------------------
    def _state(self, variant_id: str, state: str, reason: str | None = None) -> None:
        self.events.publish(ModelStateEvent(variant_id, state, reason, at=self.clock.wall()))

    async def _in_thread(
        self, fn: Callable[[ProgressCallback], T], progress: ProgressCallback, cancel: CancelToken
    ) -> T:
        """Run blocking work (download, compile) in a thread, progress delivered on the loop.

        If the caller is cancelled, the work is told to stop through `cancel`, and we still wait
        for the thread to finish so that partial files are consistent (and resumable) by the
        time the cancellation propagates."""
        loop = asyncio.get_running_loop()

        def on_loop(p: Progress) -> None:
            loop.call_soon_threadsafe(progress, p)

        fut = asyncio.ensure_future(asyncio.to_thread(fn, on_loop))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancel.cancel("request cancelled")
            with contextlib.suppress(BaseException):
                await fut
            raise

    async def download(
        self,
        name: str,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> ModelView:
        """Download (and build, where the variant is compiled locally) into the cache.

        Callers asking for a variant already on its way join that download (ProvisioningJobs):
        one transfer, one worker thread, everyone gets its progress and result. Cancelling one
        caller stops the download only if no other caller waits for it."""
        v = self.resolve(name)
        if self.provisioner.is_present(v):
            return self.view(v)
        await self.jobs.join(
            v.id,
            lambda prog, token: self._fetch(v, prog, token),
            progress=progress,
            cancel=cancel or CancelToken(),
            holds=self.provisioner.inputs(v),
            what="downloaded",
        )
        return self.view(v)

    async def _fetch(
        self, v: ModelVariant, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        """One download (or build) of `v` into the cache, however many callers wait for it."""
        loop = asyncio.get_running_loop()

        def on_state(vid: str, state: str) -> None:
            loop.call_soon_threadsafe(self._state, vid, state)

        def work(prog: ProgressCallback) -> Path:
            return self.provisioner.ensure(v, prog, cancel, on_state)

        try:
            await self._in_thread(work, progress, cancel)
        except (asyncio.CancelledError, Cancelled):
            self._state(v.id, "cancelled", "download cancelled; it resumes next time")
            raise
        except IngotError as e:
            self._state(v.id, "failed", e.message)
            raise
        self._state(v.id, "cached")

    async def register(
        self,
        folder: Path,
        *,
        runtime: str = "onnx-genai",
        name: str | None = None,
        alias: str | None = None,
    ) -> ModelView:
        if name is not None:
            check_registration_name(name, "name")
        if alias is not None:
            check_registration_name(alias, "alias")
        # A vLLM folder runs on the GPU where there is one (vLLM's CUDA build); ONNX folders are
        # CPU builds unless compiled for CUDA.
        device: Device = "cuda" if runtime == "vllm" and self._hardware.has_cuda else "cpu"
        v = self.provisioner.describe_folder(
            folder, runtime=runtime, name=name, alias=alias, device=device
        )
        if self.catalog.registrations is None:
            raise IngotError("This engine has no registration store.")
        self.catalog.check_registration(v.id, v.alias)
        self.catalog.registrations.add(v)
        self._state(v.id, "registered")
        return self.view(v)

    async def compile(
        self,
        source: str,
        *,
        precision: str = "int8",
        device: str = "cpu",
        name: str | None = None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> ModelView:
        """Compile a GGUF file, a Hugging Face folder or an HF-format catalog model to ONNX."""
        cancel = cancel or CancelToken()
        prec = precision_of(precision)
        if name is not None:
            check_registration_name(name, "name")
        path = Path(source).expanduser()
        from_catalog = None if path.exists() else self.resolve(source)
        if from_catalog is not None:
            # Named apart from the catalog model it comes from, whose alias the catalog owns.
            default_name = f"{from_catalog.alias}-local"
        else:
            default_name = path.stem if path.is_file() else path.name
        vid = compiled_id(name or default_name, device, prec)
        self._check_new(vid, name or default_name)  # before a download or an hour of compiling
        reads: list[str] = []
        if from_catalog is not None:
            # A catalog model in Hugging Face format (e.g. a vLLM variant): fetch it first.
            view = await self.download(from_catalog.id, progress=progress, cancel=cancel)
            if view.path is None or not (view.path / "config.json").is_file():
                raise InvalidRequest(
                    f"{from_catalog.id} is not in Hugging Face format, so there is nothing to "
                    "compile.",
                    param="source",
                )
            path, reads = view.path, [from_catalog.id]

        def work(prog: ProgressCallback, on_state: StateCallback) -> ModelVariant:
            return self.provisioner.compile_source(
                path.resolve(),
                name=name or default_name,
                precision=prec,
                device=device,
                progress=prog,
                cancel=cancel,
                on_state=on_state,
            )

        with self.jobs.hold([vid, *reads], "compiled"):
            return await self._build_and_register(work, progress, cancel)

    def _check_new(self, variant_id: str, name: str) -> None:
        """Refuse, before any work, a compile or import whose model would take a catalog name."""
        self.catalog.check_registration(
            variant_id, slug(name), hint="Give it another name with --name."
        )

    async def _build_and_register(
        self,
        work: Callable[[ProgressCallback, StateCallback], ModelVariant],
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> ModelView:
        """Run a build (compile, import) in a thread with its state changes delivered on the
        loop, then register the variant it made as a local model."""
        loop = asyncio.get_running_loop()

        def on_state(vid: str, state: str) -> None:
            loop.call_soon_threadsafe(self._state, vid, state)

        variant = await self._in_thread(lambda prog: work(prog, on_state), progress, cancel)
        if self.catalog.registrations is None:
            raise IngotError("This engine has no registration store.")
        self.catalog.registrations.add(variant)
        self._state(variant.id, "cached")
        return self.view(variant)

    async def import_gguf(
        self,
        path: Path,
        *,
        name: str | None = None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> ModelView:
        """Import a GGUF file keeping its own quantised blocks (Q4_0, Q4_1, Q8_0) as a local
        ONNX Runtime GenAI model; other tensor types are re-quantised to int8 and reported."""
        cancel = cancel or CancelToken()
        if name is not None:
            check_registration_name(name, "name")
        gguf = path.expanduser().resolve()
        name = name or gguf.stem
        vid = imported_id(name)
        self._check_new(vid, name)

        def work(prog: ProgressCallback, on_state: StateCallback) -> ModelVariant:
            return self.provisioner.import_source(
                gguf, name=name, progress=prog, cancel=cancel, on_state=on_state
            )

        with self.jobs.hold([vid], "imported"):
            return await self._build_and_register(work, progress, cancel)

    async def verify_fidelity(
        self,
        name: str,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> FidelityReport | EmbeddingFidelityReport:
        """KL divergence of the model's next-token distributions from its source weights; for
        an embedding model, the cosine of its vectors with the torch reference's."""
        v = self.resolve(name)
        cancel = cancel or CancelToken()
        with self.jobs.hold(self.provisioner.inputs(v), "checked"):
            return await self._in_thread(
                lambda prog: self.provisioner.fidelity(v, prog, cancel), progress, cancel
            )

    async def delete(self, name: str) -> bool:
        v = self.resolve(name)
        if doing := self.jobs.busy(v.id):
            # Its partial files are being written (or read, by a build): removing them now
            # would break that operation and leave half a folder.
            raise ModelBusy(
                f"{v.id} is being {doing}.",
                hint="Cancel that (or wait for it to finish), then remove the model.",
                model=v.id,
            )
        if self.loader.get_loaded(v.id) and not await self.loader.unload(v.id, force=False):
            raise ModelBusy(
                f"{v.id} is running requests.",
                hint="Wait for them, or unload with force first.",
            )
        removed = await asyncio.to_thread(self.cache.remove, v.id)
        if self.catalog.is_registered(v.id) and self.catalog.registrations:
            removed = self.catalog.registrations.remove(v.id) or removed
            if v.source.kind == "remote":
                self._remotes().prune_keys()
        self._state(v.id, "deleted")
        return removed

    def cache_info(self) -> CacheInfo:
        entries = self.cache.list()
        root = self.cache.root
        root.mkdir(parents=True, exist_ok=True)
        return CacheInfo(
            path=root,
            models=len(entries),
            size_bytes=sum(e.manifest.size_bytes for e in entries),
            free_bytes=shutil.disk_usage(root).free,
        )

    async def cache_move(self, dest: Path) -> CacheInfo:
        # Validate first: a move that is refused must not have unloaded anything.
        dest = await asyncio.to_thread(check_cache_destination, dest, self.cache.root)
        if dest == self.cache.root.resolve():
            # Already there: nothing to move, so no reason to unload the running models.
            return self.cache_info()
        # Downloads and builds in flight would commit into the old cache (or lose their partial
        # files mid-write): refused while they run, and none starts until the move is done.
        with self.jobs.moving(dest):
            if any(e.active for e in self.loader.loaded()):
                raise ModelBusy("Models are running requests.", hint="Retry when they are idle.")
            for e in self.loader.loaded():
                await self.loader.unload(e.variant.id, force=True)
            new = await asyncio.to_thread(self.cache.move_to, dest)
            self.cache = new
            self.config.home.mkdir(parents=True, exist_ok=True)
            self.config.cache_pointer.write_text(str(new.root), encoding="utf-8")
        return self.cache_info()

    async def cache_verify(self, name: str | None = None) -> dict[str, list[str]]:
        vid = self.resolve(name).id if name else None
        return await asyncio.to_thread(self.cache.verify, vid)

    # -- load / unload -------------------------------------------------------------------------
    def runnable(self, name: str) -> ModelVariant:
        v = self.resolve(name)
        if (dest := self.jobs.moving_to) is not None and v.source.kind != "remote":
            # Its files are being copied away: a load now would read a half-moved folder.
            raise ModelBusy(
                f"The model cache is being moved to {dest}.",
                hint="Retry when the move is done.",
                model=v.id,
            )
        if not self.provisioner.is_present(v):
            raise ModelNotCached(
                f"{v.id} is not downloaded yet.",
                # The id, not the alias: the alias may resolve to another variant of the model.
                hint=f"Run `ingot model download {v.id}` first.",
                model=v.id,
            )
        why = self.runtimes.unavailable_reason(v)
        if why:
            raise RuntimeUnavailable(f"{v.id} cannot run here: {why}", model=v.id)
        return v

    async def load(
        self, name: str, *, ttl_s: float | None = None, progress: ProgressCallback = no_progress
    ) -> ModelView:
        v = self.runnable(name)
        await self.loader.load(v, ttl_s=ttl_s, progress=progress)
        return self.view(v)

    async def unload(self, name: str, *, force: bool = False) -> bool:
        return await self.loader.unload(self.resolve(name).id, force=force)

    # -- generation ------------------------------------------------------------------------------
    def chat(self, req: ChatRequest) -> AsyncIterator[GenerationStreamEvent]:
        v = self.runnable(req.model)
        self.runtimes.require_task(v, CHAT_TASK)
        prepared = prepare_chat(
            req.messages,
            tools=req.tools,
            tool_choice=req.tool_choice,
            response_format=req.response_format,
        )

        async def build(inst: ModelInstance) -> PromptPlan:
            prompt = await inst.render_chat(prepared.messages)
            return PromptPlan(prompt, prepared.constraint, prepared)

        return run_generation(
            loader=self.loader,
            telemetry=self.telemetry,
            clock=self.clock,
            variant=v,
            request_id=req.request_id,
            kind=req.kind,
            priority=req.priority,
            ttl_s=req.ttl_s,
            params=req.params,
            build=build,
        )

    def complete(self, req: CompletionRequest) -> AsyncIterator[GenerationStreamEvent]:
        v = self.runnable(req.model)
        self.runtimes.require_task(v, CHAT_TASK)
        check_text(req.prompt, "prompt")
        if req.suffix is not None:
            check_text(req.suffix, "suffix")

        fim = (v.prompt_template or {}).get("fim") if v.capabilities.fim else None

        async def build(inst: ModelInstance) -> PromptPlan:
            if req.suffix is None:
                return PromptPlan(req.prompt)
            if fim:
                # The model was trained for fill-in-the-middle: its own FIM tokens, raw.
                parts = {"prefix": req.prompt, "suffix": req.suffix}
                # One pass: a prompt that itself contains "{suffix}" (an f-string) stays intact.
                return PromptPlan(re.sub(r"\{(prefix|suffix)\}", lambda m: parts[m[1]], fim))
            msgs = [
                {"role": "system", "content": FIM_SYSTEM},
                {"role": "user", "content": f"{req.prompt}<CURSOR>{req.suffix}"},
            ]
            return PromptPlan(await inst.render_chat(msgs))

        return run_generation(
            loader=self.loader,
            telemetry=self.telemetry,
            clock=self.clock,
            variant=v,
            request_id=req.request_id,
            kind=req.kind,
            priority=req.priority,
            ttl_s=req.ttl_s,
            params=req.params,
            build=build,
        )

    async def count_tokens(
        self,
        name: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        priority: int = PRIORITY_CHAT,
    ) -> int:
        v = self.runnable(name)
        if messages is not None:
            self.runtimes.require_task(v, CHAT_TASK)
        async with self.loader.use(v) as (entry, _, _):
            inst = entry.instance
            # Rendering and tokenising cost as much as a prompt's own: they wait in the model's
            # queue like a generation, and a text that cannot fit is refused before tokenising.
            async with entry.scheduler.slot(priority):
                text = prompt or ""
                if messages is not None:
                    text = await inst.render_chat(prepare_chat(messages).messages)
                check_prompt_chars(len(text), inst.context_length, v.id)
                return await inst.count_tokens(text)

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResult:
        """Vectors for texts or token arrays from an embedding model, in input order."""
        v = self.runnable(req.model)
        self.runtimes.require_task(v, EMBEDDINGS_TASK)
        return await run_embedding(
            loader=self.loader, telemetry=self.telemetry, clock=self.clock, variant=v, req=req
        )

    # -- remote deployments (attached vLLM servers) ----------------------------------------------
    def _remotes(self) -> RemoteAttacher:
        async def unload(variant_id: str) -> None:
            if self.loader.get_loaded(variant_id) or self.loader.is_loading(variant_id):
                await self.loader.unload(variant_id, force=True)

        return RemoteAttacher(
            self.catalog,
            RemoteKeyStore(self.config.home),
            unload=unload,
            on_state=self._state,
        )

    async def attach_remote(
        self,
        url: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        name: str | None = None,
    ) -> RemoteView:
        """Attach a vLLM deployment by URL: each model its /v1/models lists becomes a variant
        (source `remote`); the key goes to `<home>/remote-keys.json`, or stays in a variable."""
        return await self._remotes().attach(
            url, api_key=api_key, api_key_env=api_key_env, name=name
        )

    async def detach_remote(self, name_or_url: str) -> RemoteView:
        """Unload and forget an attached deployment's models and its key; nothing stops there."""
        return await self._remotes().detach(name_or_url)

    def list_remotes(self) -> list[RemoteView]:
        return self._remotes().attached()

    # -- status --------------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        loaded = tuple(self.view(e.variant) for e in self.loader.loaded())
        return EngineStatus(
            version=self.version,
            pid=os.getpid(),
            home=self.config.home,
            cache_path=self.cache.root,
            started_at=self.started_at,
            loaded=loaded,
            active_requests=sum(m.active_requests for m in loaded),
            queued_requests=sum(m.queued_requests for m in loaded),
            memory_budget=self.loader.memory_budget,
            threads=self.config.threads,
        )
