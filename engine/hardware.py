"""The hardware profile: CPU, RAM, NVIDIA GPUs through NVML, and ONNX Runtime's execution providers."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import platform
from dataclasses import dataclass, field
from typing import Any

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total: int
    memory_free: int
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None


@dataclass(frozen=True)
class HardwareProfile:
    cpu_model: str
    cpu_cores_physical: int
    cpu_cores_logical: int
    ram_total: int
    ram_available: int
    gpus: tuple[GpuInfo, ...] = ()
    execution_providers: tuple[str, ...] = ()
    os: str = field(default_factory=platform.platform)
    nvml_error: str | None = None

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus)

    def devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if self.has_cuda else ("cpu",)


def cpu_model_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def probe_gpus() -> tuple[tuple[GpuInfo, ...], str | None]:
    """NVIDIA GPUs via NVML. No NVML library or no GPU is a normal answer: an empty tuple + why."""
    try:
        import pynvml
    except ImportError:
        return (), "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return (), f"NVML unavailable: {e}"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda: str | None = None
        with contextlib.suppress(Exception):
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{v // 1000}.{(v % 1000) // 10}"
        gpus = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = temp = power = None
            with contextlib.suppress(Exception):
                util = float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            with contextlib.suppress(Exception):
                temp = float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
            with contextlib.suppress(Exception):
                power = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            gpus.append(
                GpuInfo(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    memory_total=int(mem.total),
                    memory_free=int(mem.free),
                    utilization_pct=util,
                    temperature_c=temp,
                    power_w=power,
                    driver_version=driver,
                    cuda_version=cuda,
                )
            )
        return tuple(gpus), None
    except Exception as e:
        return (), f"NVML query failed: {e}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def execution_providers() -> tuple[str, ...]:
    """ONNX Runtime's providers, without importing onnxruntime (it costs ~100 MB of RSS): the GenAI
    wheel on PyPI is the CPU build; the CUDA build is the onnxruntime-genai-cuda distribution."""
    providers = ["CPUExecutionProvider"] if importlib.util.find_spec("onnxruntime_genai") else []
    with contextlib.suppress(Exception):
        from importlib.metadata import distribution

        distribution("onnxruntime-genai-cuda")
        providers.insert(0, "CUDAExecutionProvider")
    return tuple(providers)


def probe_hardware() -> HardwareProfile:
    vm = psutil.virtual_memory()
    gpus, why = probe_gpus()
    return HardwareProfile(
        cpu_model=cpu_model_name(),
        cpu_cores_physical=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        cpu_cores_logical=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total=int(vm.total),
        ram_available=int(vm.available),
        gpus=gpus,
        execution_providers=execution_providers(),
        nvml_error=why,
    )
