"""create_app(): the aiohttp application over one EngineService, whichever process hosts it (the
JSON-RPC engine or `ingot service start`). It never owns the service: the host starts and closes it."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.service import EngineService
from server.rest import openapi
from server.rest.embedding_routes import EmbeddingRoutes
from server.rest.errors import error_middleware
from server.rest.foundry_routes import FoundryRoutes
from server.rest.ingot_routes import IngotRoutes
from server.rest.metrics import RestMetrics
from server.rest.native_routes import NativeRoutes
from server.rest.openai_routes import OpenAIRoutes
from server.rest.security import Guard
from server.rest.settings import RestSettings, ServerInfo
from server.secret import health_proof
from server.state import process_started_at

SERVICE = web.AppKey("service", EngineService)
SETTINGS = web.AppKey("settings", RestSettings)
INFO = web.AppKey("info", ServerInfo)
METRICS = web.AppKey("metrics", RestMetrics)
GUARD = web.AppKey("guard", Guard)
PROBES = frozenset({"/health", "/metrics"})
MAX_CHALLENGE = 128


def _activity(info: ServerInfo) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # In-flight count and last activity drive the standalone service's idle timeout; probes
        # (health checks, scrapes) must not keep an unused service alive.
        if request.path in PROBES:
            return await handler(request)
        info.in_flight += 1
        info.last_activity = time.monotonic()
        try:
            return await handler(request)
        finally:
            info.in_flight -= 1
            info.last_activity = time.monotonic()

    return middleware


def _health(info: ServerInfo, settings: RestSettings) -> Handler:
    # Who answers: clients compare these with the home's state file before they send the secret,
    # so a process that got a dead owner's pid or port is not mistaken for it.
    me = {"pid": os.getpid(), "processStartedAt": process_started_at(os.getpid())}

    async def health(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = dict(me)
        challenge = request.query.get("challenge", "")
        if settings.secret is not None and 0 < len(challenge) <= MAX_CHALLENGE:
            body["proof"] = health_proof(settings.secret.value, challenge)
        if info.ready and not info.closing.is_set():
            return web.json_response({"status": "ok", **body})
        state = "stopping" if info.closing.is_set() else "starting"
        return web.json_response(
            {"status": state, **body}, status=503, headers={"Retry-After": "1"}
        )

    return health


def create_app(
    service: EngineService, settings: RestSettings, info: ServerInfo | None = None
) -> web.Application:
    info = info or ServerInfo()
    guard = Guard(settings)
    metrics = RestMetrics(service)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Outermost first: activity, metrics (sees the final status), errors (turns everything
        # into OpenAI JSON), then the guard, so refusals are counted and shaped like the rest.
        middlewares=[_activity(info), metrics.middleware, error_middleware, guard.middleware],
    )
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[INFO] = info
    app[METRICS] = metrics
    app[GUARD] = guard

    ingot = IngotRoutes(service, settings, info)
    app.router.add_get("/health", _health(info, settings))
    app.router.add_get("/metrics", metrics.handle)
    openapi.add_to(app.router)  # GET /openapi.json: this API, described (tests keep it complete)
    OpenAIRoutes(service, settings).add_to(app.router)
    EmbeddingRoutes(service, settings).add_to(app.router)
    FoundryRoutes(service, settings, info).add_to(app.router)
    ingot.add_to(app.router)
    NativeRoutes(service, settings).add_to(app.router)
    app.on_response_prepare.append(guard.on_prepare)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        metrics.start()
        yield
        metrics.stop()

    async def on_shutdown(app: web.Application) -> None:
        # Long-lived event streams end now instead of holding shutdown for their timeout.
        info.closing.set()
        ingot.close_streams()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(on_shutdown)
    return app
