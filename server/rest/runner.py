"""start_rest_server(): bind the REST app (port 0 = a free port) and hand back its URL and a stop()."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, replace

import psutil
from aiohttp import web

from engine.service import EngineService
from server.rest.app import GUARD, INFO, create_app
from server.rest.http_server import IngotAppRunner
from server.rest.settings import RestSettings, ServerInfo
from server.secret import ensure_secret

log = logging.getLogger("ingot.rest")

WILDCARDS = {"", "0.0.0.0", "::"}
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'


@dataclass
class RunningRest:
    app: web.Application
    runner: web.AppRunner
    url: str
    port: int
    host: str

    @property
    def info(self) -> ServerInfo:
        return self.app[INFO]

    def mark_ready(self, ready: bool = True) -> None:
        """`/health` answers 503 until the host says the engine is ready."""
        self.info.ready = ready

    async def stop(self) -> None:
        self.info.ready = False
        await self.runner.cleanup()


def _url_host(host: str) -> str:
    if host in WILDCARDS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _local_names() -> set[str]:
    """Names this machine answers to, for a server bound to every interface."""
    names = {socket.gethostname(), socket.getfqdn()}
    for addrs in psutil.net_if_addrs().values():
        names.update(a.address.split("%")[0] for a in addrs if a.family in (2, 10))
    return {n.lower() for n in names if n}


async def start_rest_server(
    service: EngineService, settings: RestSettings, *, ready: bool = True
) -> RunningRest:
    """Raises ValueError for unsafe settings (a non-loopback address without an API key, a home
    secret file that must not be used) and OSError when the port cannot be bound. Makes the home's
    secret on the first start unless `settings` brings one."""
    settings.check()
    if settings.secret is None:
        settings = replace(settings, secret=ensure_secret(service.config.home))
    app = create_app(service, settings)
    guard = app[GUARD]
    if settings.host in WILDCARDS:
        for name in _local_names():
            guard.allow_host(name)
    else:
        guard.allow_host(settings.host)
    # "localhost" can resolve to two addresses, which with port 0 would get two different ports.
    bind = "127.0.0.1" if settings.host == "localhost" else settings.host
    runner = IngotAppRunner(
        app,
        # A client that disconnects cancels its handler, and with it the generation.
        handler_cancellation=True,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=settings.shutdown_timeout_s,
        max_connections=settings.max_connections,
        read_timeout_s=settings.read_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, bind or None, settings.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    addresses = runner.addresses
    port = int(addresses[0][1]) if addresses else settings.port
    url = f"http://{_url_host(settings.host)}:{port}"
    app[INFO].url = url
    app[INFO].ready = ready
    log.info("REST server listening on %s", url)
    return RunningRest(app=app, runner=runner, url=url, port=port, host=settings.host)
