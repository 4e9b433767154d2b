"""Telemetry: subscriptions that push system samples and per-request records; history on demand."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.telemetry import RequestRecord
from protocol.jsonrpc import service as s
from server import translate
from server.jsonrpc.server import IngotServer, dump, parse


def register(server: IngotServer) -> None:
    state: dict[str, Any] = {"task": None, "unsubscribe": None}

    def sample() -> s.TelemetrySample | None:
        svc = server.service
        samples = svc.telemetry.samples
        latest = samples[-1] if samples else svc.telemetry.take_sample()
        return translate.telemetry_sample(latest, svc.status())

    async def push(interval: float) -> None:
        while True:
            x = sample()
            if x is not None:
                server.notify("ingot/telemetry/sample", x)
            await asyncio.sleep(interval)

    def stop() -> None:
        if state["task"] is not None:
            state["task"].cancel()
            state["task"] = None
        if state["unsubscribe"] is not None:
            state["unsubscribe"]()
            state["unsubscribe"] = None

    @server.feature("ingot/telemetry/subscribe")
    async def subscribe(params: Any) -> Any:
        p = parse(s.TelemetrySubscribeParams, params)
        stop()

        def on_request(r: RequestRecord) -> None:
            server.notify("ingot/telemetry/request", translate.request_telemetry(r))

        state["unsubscribe"] = server.service.telemetry.request_events.add_listener(on_request)
        state["task"] = server.spawn(push(p.interval_ms / 1000))
        return dump(s.TelemetrySubscribeResult(interval_ms=p.interval_ms))

    @server.feature("ingot/telemetry/unsubscribe")
    async def unsubscribe(params: Any) -> Any:
        stop()
        return None

    @server.feature("ingot/telemetry/history")
    async def history(params: Any) -> Any:
        svc = server.service
        status = svc.status()
        return dump(
            s.TelemetryHistoryResult(
                samples=[translate.telemetry_sample(x, status) for x in svc.telemetry.samples],
                requests=[translate.request_telemetry(r) for r in svc.telemetry.requests],
            )
        )
