"""Prometheus metrics for one app (its own CollectorRegistry): HTTP requests, generation latency
histograms fed by the engine's request records, and gauges read from the engine at scrape time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import psutil
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from engine.service import EngineService
from engine.telemetry import RequestRecord

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EngineCollector(Collector):
    """Gauges computed when scraped, so they are never stale."""

    def __init__(self, service: EngineService) -> None:
        self.service = service
        self._proc = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        st = self.service.status()
        yield GaugeMetricFamily(
            "ingot_queue_depth", "Requests waiting for a model", value=st.queued_requests
        )
        yield GaugeMetricFamily(
            "ingot_active_requests", "Generations running now", value=st.active_requests
        )
        yield GaugeMetricFamily("ingot_loaded_models", "Models in memory", value=len(st.loaded))
        mem = GaugeMetricFamily(
            "ingot_loaded_model_memory_bytes", "Memory a loaded model takes", labels=["model"]
        )
        runtime = GaugeMetricFamily(
            "ingot_runtime_metric",
            "A loaded runtime's own metric (vLLM: kv_cache_usage, requests_waiting, ...)",
            labels=["model", "metric"],
        )
        for m in st.loaded:
            mem.add_metric([m.variant.id], float(m.memory_bytes or 0))
            for name, value in ((m.runtime_info or {}).get("metrics") or {}).items():
                runtime.add_metric([m.variant.id, str(name)], float(value))
        yield mem
        yield runtime
        samples = self.service.telemetry.samples
        last = samples[-1] if samples else None
        rss = last.engine_rss if last else self._proc.memory_info().rss
        yield GaugeMetricFamily("ingot_engine_rss_bytes", "Engine resident memory", value=rss)
        if last is not None:
            yield GaugeMetricFamily(
                "ingot_engine_cpu_percent",
                "Engine CPU use (100 = one core)",
                value=last.engine_cpu_pct,
            )
            yield GaugeMetricFamily(
                "ingot_system_cpu_percent", "Machine CPU use", value=last.cpu_pct
            )
            yield GaugeMetricFamily(
                "ingot_system_memory_used_bytes", "RAM in use", value=last.ram_used
            )
        util = GaugeMetricFamily("ingot_gpu_utilization_percent", "GPU use", labels=["gpu"])
        used = GaugeMetricFamily("ingot_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("ingot_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        for g in last.gpus if last else ():
            util.add_metric([str(g.index)], g.utilization_pct or 0.0)
            used.add_metric([str(g.index)], float(g.memory_used))
            total.add_metric([str(g.index)], float(g.memory_total))
        yield from (util, used, total)


class RestMetrics:
    def __init__(self, service: EngineService) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "ingot_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.http_seconds = Histogram(
            "ingot_http_request_duration_seconds",
            "Time to the end of the response (whole stream for SSE)",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "ingot_time_to_first_token_seconds",
            "From arrival to the first token (queueing and loading included)",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "ingot_time_per_output_token_seconds",
            "Decode time per token after the first",
            ["model"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.generated = Counter(
            "ingot_generated_tokens", "Completion tokens produced", ["model"], registry=r
        )
        self.prompt = Counter(
            "ingot_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.generations = Counter(
            "ingot_generations", "Finished generations", ["model", "finish_reason"], registry=r
        )
        r.register(EngineCollector(service))
        ProcessCollector(registry=r)
        self._unsubscribe: Callable[[], None] | None = None
        self.service = service

    def observe(self, rec: RequestRecord) -> None:
        m = rec.model_id
        self.generations.labels(m, rec.finish_reason).inc()
        self.generated.labels(m).inc(rec.completion_tokens)
        self.prompt.labels(m).inc(rec.prompt_tokens)
        if rec.ttft_ms is not None:
            self.ttft.labels(m).observe(rec.ttft_ms / 1000)
        if rec.decode_tps:
            self.tpot.labels(m).observe(1 / rec.decode_tps)

    def start(self) -> None:
        # Every generation counts, whichever front-end (REST, JSON-RPC, CLI) asked for it.
        self._unsubscribe = self.service.telemetry.request_events.add_listener(self.observe)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        info = request.match_info.route.resource
        # The route template, never the raw path: model names must not explode the label set.
        route = info.canonical if info is not None else "unmatched"
        status = 499  # the handler was cancelled: the client went away
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except asyncio.CancelledError:
            raise
        except web.HTTPException as e:
            status = e.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.http_requests.labels(route, request.method, str(status)).inc()
            self.http_seconds.labels(route).observe(time.perf_counter() - t0)

    async def handle(self, request: web.Request) -> web.Response:
        # On the loop, not in a thread: the collector reads engine state the loop mutates.
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
