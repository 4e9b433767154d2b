"""Telemetry: a record per request and a system sample per second, in ring buffers with subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

import psutil

from engine.clock import Clock
from engine.events import EventBus
from engine.generation import RuntimeStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestRecord:
    """One generation's measurements. Times in milliseconds, rates in tokens per second."""

    request_id: str
    model_id: str
    runtime: str
    device: str
    kind: str  # chat, complete, edit, inline
    started_at: float  # wall clock
    queue_ms: float
    load_ms: float
    ttft_ms: float | None
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    prefill_tps: float | None
    decode_tps: float | None
    finish_reason: str
    cached_tokens: int = 0  # prompt tokens reused from an earlier request's KV cache
    accepted_prediction_tokens: int = 0  # draft tokens from the request's prediction kept
    rejected_prediction_tokens: int = 0  # and computed but thrown away

    @staticmethod
    def from_stats(
        *,
        request_id: str,
        model_id: str,
        runtime: str,
        device: str,
        kind: str,
        started_at: float,
        requested: float,
        queue_s: float,
        load_s: float,
        stats: RuntimeStats,
        finish_reason: str,
        completion_tokens: int | None = None,
    ) -> RequestRecord:
        """`requested` is the monotonic time the request arrived; TTFT counts from there, so it
        includes queueing and loading, as a user feels it."""
        first = stats.first_token
        ttft = None if first is None else (first - requested) * 1000
        prefill_s = None if first is None else first - stats.started
        # Tokens actually prefilled: a prompt cache hit computes only what was new.
        prefilled = stats.prompt_tokens - stats.cached_tokens
        prefill = prefilled / prefill_s if prefill_s and prefill_s > 0 else None
        n = stats.completion_tokens if completion_tokens is None else completion_tokens
        decode_s = None if first is None else stats.finished - first
        decode = (n - 1) / decode_s if decode_s and decode_s > 0 and n > 1 else None
        return RequestRecord(
            request_id=request_id,
            model_id=model_id,
            runtime=runtime,
            device=device,
            kind=kind,
            started_at=started_at,
            queue_ms=queue_s * 1000,
            load_ms=load_s * 1000,
            ttft_ms=ttft,
            total_ms=(stats.finished - requested) * 1000,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=n,
            prefill_tps=prefill,
            decode_tps=decode,
            finish_reason=finish_reason,
            cached_tokens=stats.cached_tokens,
            accepted_prediction_tokens=stats.accepted_prediction_tokens,
            rejected_prediction_tokens=stats.rejected_prediction_tokens,
        )


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    utilization_pct: float | None
    memory_used: int
    memory_total: int
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class SystemSample:
    at: float
    cpu_pct: float
    # The engine process plus its model workers: what running Ingot costs the machine.
    engine_cpu_pct: float
    engine_rss: int
    ram_used: int
    ram_total: int
    gpus: tuple[GpuSample, ...] = ()


class GpuSampler:
    """Keeps NVML initialised between samples (init costs milliseconds); absent NVML = no GPUs."""

    def __init__(self) -> None:
        self._nvml: object | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:
            self._nvml = None

    def sample(self) -> tuple[GpuSample, ...]:
        nv = self._nvml
        if nv is None:
            return ()
        out = []
        try:
            for i in range(int(nv.nvmlDeviceGetCount())):  # type: ignore[attr-defined]
                h = nv.nvmlDeviceGetHandleByIndex(i)  # type: ignore[attr-defined]
                mem = nv.nvmlDeviceGetMemoryInfo(h)  # type: ignore[attr-defined]
                util = temp = power = None
                with contextlib.suppress(Exception):
                    util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):
                    temp = float(nv.nvmlDeviceGetTemperature(h, 0))  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):
                    power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0  # type: ignore[attr-defined]
                name = nv.nvmlDeviceGetName(h)  # type: ignore[attr-defined]
                out.append(
                    GpuSample(
                        i,
                        name.decode() if isinstance(name, bytes) else str(name),
                        util,
                        int(mem.used),
                        int(mem.total),
                        temp,
                        power,
                    )
                )
        except Exception:
            log.debug("GPU sample failed", exc_info=True)
        return tuple(out)


class ProcessTree:
    """CPU and memory of the engine and its children (each loaded model's worker process)."""

    def __init__(self) -> None:
        self._root = psutil.Process()
        self._root.cpu_percent(None)
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, int]:
        """(CPU %, resident bytes) summed over the engine and its descendants."""
        cpu = self._root.cpu_percent(None)
        rss = int(self._root.memory_info().rss)
        seen: dict[int, psutil.Process] = {}
        for child in self._root.children(recursive=True):
            proc = self._known.get(child.pid, child)
            try:
                # A child seen for the first time has no CPU baseline yet: it counts from now.
                pct = proc.cpu_percent(None)
                cpu += pct if child.pid in self._known else 0.0
                rss += int(proc.memory_info().rss)
            except psutil.Error:
                continue
            seen[child.pid] = proc
        self._known = seen
        return cpu, rss


@dataclass
class Telemetry:
    clock: Clock
    history: int = 600
    interval_s: float = 1.0
    samples: deque[SystemSample] = field(init=False)
    requests: deque[RequestRecord] = field(init=False)
    sample_events: EventBus[SystemSample] = field(default_factory=EventBus)
    request_events: EventBus[RequestRecord] = field(default_factory=EventBus)
    _task: asyncio.Task[None] | None = None
    _gpu: GpuSampler | None = None

    def __post_init__(self) -> None:
        self.samples = deque(maxlen=self.history)
        self.requests = deque(maxlen=self.history)
        self._tree = ProcessTree()
        # Prime the CPU counters: the first cpu_percent() call always returns 0.
        psutil.cpu_percent(None)

    def record(self, rec: RequestRecord) -> None:
        self.requests.append(rec)
        self.request_events.publish(rec)

    def take_sample(self) -> SystemSample:
        if self._gpu is None:
            self._gpu = GpuSampler()
        vm = psutil.virtual_memory()
        cpu, rss = self._tree.sample()
        s = SystemSample(
            at=self.clock.wall(),
            cpu_pct=psutil.cpu_percent(None),
            engine_cpu_pct=cpu,
            engine_rss=rss,
            ram_used=int(vm.total - vm.available),
            ram_total=int(vm.total),
            gpus=self._gpu.sample(),
        )
        self.samples.append(s)
        self.sample_events.publish(s)
        return s

    async def _loop(self) -> None:
        while True:
            try:
                self.take_sample()
            except Exception:
                log.exception("telemetry sample failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="ingot-telemetry")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
