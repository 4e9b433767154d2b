"""build_engine(): the one composition root that wires the engine's parts together."""

from __future__ import annotations

from pathlib import Path

from engine.cache import ModelCache
from engine.catalog.catalog import ModelCatalog, RegistrationStore
from engine.clock import Clock, SystemClock
from engine.config import EngineConfig
from engine.distribution import ingot_version
from engine.events import EventBus, ModelStateEvent
from engine.hardware import HardwareProfile, probe_hardware
from engine.provisioning import Compiler, Downloader, Provisioner
from engine.runtimes.base import Runtime
from engine.runtimes.onnx_embeddings import OnnxEmbeddingRuntime
from engine.runtimes.onnx_genai import OnnxGenaiRuntime
from engine.runtimes.vllm import VllmRuntime
from engine.selector import RuntimeSelector
from engine.service import EngineService
from engine.telemetry import Telemetry


def cache_root(config: EngineConfig) -> Path:
    """The cache lives in the home unless `ingot cache cd` pointed it elsewhere."""
    try:
        pointed = config.cache_pointer.read_text(encoding="utf-8").strip()
    except OSError:
        pointed = ""
    return Path(pointed) if pointed else config.home / "cache"


def default_memory_budget(hw: HardwareProfile) -> int:
    # Leave a quarter of RAM to the editor and the rest of the machine.
    return int(hw.ram_total * 0.75)


def default_runtimes(config: EngineConfig, hardware: HardwareProfile | None) -> dict[str, Runtime]:
    """Both runtimes; vLLM plans against a fresh probe at each load (GPU memory moves) unless the
    caller fixed the hardware profile."""
    return {
        "onnx-genai": OnnxGenaiRuntime(),
        "onnxruntime": OnnxEmbeddingRuntime(),
        "vllm": VllmRuntime(
            config.vllm_python,
            home=config.home,
            preferences=config.vllm_preferences,
            hardware=(lambda: hardware) if hardware is not None else probe_hardware,
            load_timeout_s=config.vllm_load_timeout_s,
        ),
    }


def _downloader() -> Downloader:
    from engine.downloads import HfDownloader

    return HfDownloader()


def build_engine(
    config: EngineConfig | None = None,
    *,
    hardware: HardwareProfile | None = None,
    clock: Clock | None = None,
    runtimes: dict[str, Runtime] | None = None,
    downloader: Downloader | None = None,
    compiler: Compiler | None = None,
) -> EngineService:
    config = config or EngineConfig.from_env()
    hw = hardware or probe_hardware()
    clock = clock or SystemClock()
    catalog = ModelCatalog.default(
        config.extra_catalogs, RegistrationStore(config.home / "registered.json")
    )
    events: EventBus[ModelStateEvent] = EventBus()
    telemetry = Telemetry(
        clock, history=config.telemetry_history, interval_s=config.telemetry_interval_s
    )
    selector = RuntimeSelector(
        runtimes if runtimes is not None else default_runtimes(config, hardware)
    )

    def make_compiler() -> Compiler:
        if compiler is not None:
            return compiler
        from engine.compile import Compiler as RealCompiler

        return RealCompiler(python=config.compile_python)

    def make_provisioner(service: EngineService) -> Provisioner:
        from engine.compile import locate_pypi_file

        return Provisioner(
            catalog=catalog,
            cache=lambda: service.cache,
            downloader=(lambda: downloader) if downloader is not None else _downloader,
            compiler=make_compiler,
            locate_pypi=lambda pkg, file, ver, d: locate_pypi_file(pkg, file, ver, download_dir=d),
            threads=config.threads,
        )

    return EngineService(
        config=config,
        hardware=hw,
        catalog=catalog,
        cache=ModelCache(cache_root(config)),
        provisioner_factory=make_provisioner,
        runtimes=selector,
        telemetry=telemetry,
        events=events,
        clock=clock,
        memory_budget=config.memory_budget_bytes or default_memory_budget(hw),
        version=ingot_version(),
    )
