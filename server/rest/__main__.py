"""`python -m server.rest`: the standalone service behind `ingot service start`.

Builds the engine for an Ingot home, serves the REST API, records itself in the home's state file
(kind "service") and removes it on exit. SIGTERM/SIGINT stop it cleanly. Logs go to stderr only,
and never contain prompts or completions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.bootstrap import build_engine
from engine.config import EngineConfig, default_home
from engine.errors import IngotError
from server.rest.runner import start_rest_server
from server.rest.settings import DEFAULT_PORT, RestSettings, ServerInfo
from server.secret import ensure_secret
from server.state import (
    ServiceState,
    clear_state,
    live_state,
    now,
    ownership_lock,
    write_state,
)

log = logging.getLogger("ingot.service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m server.rest", description=__doc__)
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT}; 0 = a free port)")
    p.add_argument("--home", help="Ingot home (default INGOT_HOME or ~/.ingot)")
    p.add_argument("--api-key", help="require this key (mandatory off loopback; or INGOT_API_KEY)")
    p.add_argument(
        "--idle-timeout", type=float, default=0, help="exit after S seconds without requests"
    )
    p.add_argument("--allowed-host", action="append", default=[], help="extra Host name to accept")
    p.add_argument("--cors-origin", action="append", default=[], help="browser origin to allow")
    p.add_argument("--queue-limit", type=int, help="requests that may wait per model")
    p.add_argument("--log-level", default=os.environ.get("INGOT_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


async def _idle_watch(timeout_s: float, info: ServerInfo, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(min(1.0, timeout_s))
        quiet = time.monotonic() - info.last_activity
        if info.in_flight == 0 and quiet >= timeout_s:
            log.info("no requests for %.0f s: stopping (idle timeout)", quiet)
            stop.set()


async def serve(args: argparse.Namespace) -> int:
    home = Path(args.home).expanduser().resolve() if args.home else default_home()
    owner = live_state(home)
    if owner is not None and owner.pid != os.getpid():
        log.error(
            "%s is already served by pid %d at %s; stop it first (ingot service stop).",
            home,
            owner.pid,
            owner.url,
        )
        return 1
    config = EngineConfig.from_env(home=home, queue_limit=args.queue_limit)
    settings = RestSettings.from_env(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        allowed_hosts=tuple(args.allowed_host) or None,
        cors_origins=tuple(args.cors_origin) or None,
    )
    try:
        settings.check()
        # Made (or checked) before anything listens: a secret file that must not be used stops
        # the start with a message that says how to fix it. Never logged.
        settings = replace(settings, secret=ensure_secret(home))
    except ValueError as e:
        log.error("%s", e)
        return 2
    try:
        service = build_engine(config)
    except IngotError as e:
        log.error("cannot start the engine: %s", e)
        return 2
    try:
        running = await start_rest_server(service, settings, ready=False)
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, e)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher: asyncio.Task[None] | None = None
    try:
        await service.start()
        # Check and claim under the home's ownership lock: an editor's engine may have claimed
        # the home since the check above.
        async with ownership_lock(home):
            owner = live_state(home)
            if owner is not None and owner.pid != os.getpid():
                log.error(
                    "%s is already served by pid %d at %s; stop it first (ingot service stop).",
                    home,
                    owner.pid,
                    owner.url,
                )
                return 1
            running.mark_ready()
            write_state(
                home,
                ServiceState(
                    pid=os.getpid(),
                    url=running.url,
                    started_at=now(),
                    kind="service",
                    version=service.version,
                    home=str(home),
                ),
            )
        log.info("Ingot service %s ready at %s (home %s)", service.version, running.url, home)
        if args.idle_timeout and args.idle_timeout > 0:
            watcher = asyncio.create_task(_idle_watch(args.idle_timeout, running.info, stop))
        await stop.wait()
        log.info("stopping")
    finally:
        clear_state(home, os.getpid())
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await running.stop()
        await service.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
