"""Telemetry: subscriptions that push system samples and per-request records; history on demand.
A forwarding engine relays the owner's samples and records (read from the owner's event stream),
so the editor sees the process that runs its models rather than the forwarding one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from engine.telemetry import RequestRecord
from protocol.jsonrpc import service as s
from server import translate
from server.jsonrpc.forwarding import Forwarder, OwnerUnreachable
from server.jsonrpc.protocol import RpcError
from server.jsonrpc.server import IngotServer, dump, parse

log = logging.getLogger("ingot.jsonrpc")

# The owner samples about once a second; a relayed sample is sent when about `interval` has
# passed since the last one sent (a little less, so that a jittery clock does not skip one).
_SLACK = 0.9
# The owner's event stream's events -> this engine's notifications.
RELAYED = {
    "sample": "ingot/telemetry/sample",
    "request": "ingot/telemetry/request",
    "state": "ingot/model/stateChanged",
}


async def relay_owner_events(
    server: IngotServer, fwd: Forwarder, interval: float, warned: set[str] | None = None
) -> None:
    """Relay the owner's samples, request records and model state changes as this engine's own
    notifications until the owner's stream ends or this engine stops forwarding to `fwd`. A
    refused connection means the owner is gone: take the home over (or follow its new owner).
    `warned`: the owner's refusals already logged, so a retry every `interval` logs each once."""
    last_at = float("-inf")
    try:
        async with contextlib.aclosing(fwd.events()) as events:
            async for event, data in events:
                if server.forwarder is not fwd:
                    return
                method = RELAYED.get(event)
                if method is None or not isinstance(data, dict):
                    continue
                # The owner's wire data as it sent it: the same protocol, and a newer owner's
                # extra fields reach the editor rather than failing validation here.
                if event == "sample":
                    at = data.get("at")
                    if not isinstance(at, int | float) or at - last_at < interval * _SLACK:
                        continue
                    last_at = float(at)
                server.notify(method, data)
    except OwnerUnreachable as e:
        if e.refused and await server.take_over():
            return
        log.warning("%s", e)
    except (RpcError, ValueError) as e:
        # The owner refused the stream (HTTP 401 or 404: an older owner, a changed key) or sent
        # something that is not JSON: the subscription must outlive it, so retry like above.
        reason = f"the owning engine's event stream failed: {e}"
        if warned is None or reason not in warned:
            log.warning("%s; retrying every %g s", reason, interval)
            if warned is not None:
                warned.add(reason)
    # The stream ended (the owner is shutting down) or did not answer: try again after a pause.
    await asyncio.sleep(interval)


def register(server: IngotServer) -> None:
    state: dict[str, Any] = {"task": None, "unsubscribe": None}

    def sample() -> s.TelemetrySample | None:
        svc = server.service
        samples = svc.telemetry.samples
        latest = samples[-1] if samples else svc.telemetry.take_sample()
        return translate.telemetry_sample(latest, svc.status())

    async def push(interval: float) -> None:
        warned: set[str] = set()
        while True:
            fwd = server.forwarder
            if fwd is not None:
                await relay_owner_events(server, fwd, interval, warned)
                continue
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

        # Requests run here (this engine owns the home, or took it over); a forwarded request's
        # record comes from the owner's stream instead.
        state["unsubscribe"] = server.service.telemetry.request_events.add_listener(on_request)
        state["task"] = server.spawn(push(p.interval_ms / 1000))
        return dump(s.TelemetrySubscribeResult(interval_ms=p.interval_ms))

    @server.feature("ingot/telemetry/unsubscribe")
    async def unsubscribe(params: Any) -> Any:
        stop()
        return None

    @server.feature("ingot/telemetry/history")
    async def history(params: Any) -> Any:
        # Forwarding engines ask the owner instead (handlers/forward.py wraps this method).
        svc = server.service
        status = svc.status()
        return dump(
            s.TelemetryHistoryResult(
                samples=[translate.telemetry_sample(x, status) for x in svc.telemetry.samples],
                requests=[translate.request_telemetry(r) for r in svc.telemetry.requests],
            )
        )
