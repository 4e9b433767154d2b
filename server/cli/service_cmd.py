"""`ingot service start|stop|restart|status|ps|logs`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from server.cli.client import CliError
from server.cli.context import CliContext
from server.cli.launcher import find_service, log_path, start_service, stop_service
from server.cli.render import (
    ago,
    human_bytes,
    human_duration,
    note,
    print_fields,
    print_json,
    print_table,
    say,
    when,
)

if TYPE_CHECKING:
    from protocol.jsonrpc.service import ServiceStatus
    from server.state import ServiceState

EXIT_NOT_RUNNING = 3


def status_object(ctx: CliContext, st: ServiceState | None, live: ServiceStatus | None) -> Any:
    """The stable `-o json` shape of `ingot service status` (documented in docs/cli.md)."""
    if st is None:
        return {
            "running": False,
            "home": str(ctx.home),
            "logFile": str(log_path(ctx.home)),
        }
    return {
        "running": True,
        "url": st.url,
        "openaiBaseUrl": st.url.rstrip("/") + "/v1",
        "pid": st.pid,
        "kind": st.kind,
        "startedAt": st.started_at,
        "version": st.version,
        "home": st.home,
        "logFile": st.log_file or str(log_path(ctx.home)),
        "status": live,
    }


def _live_status(ctx: CliContext, st: ServiceState) -> ServiceStatus | None:
    # A secret file that must not be used is the user's to fix: say so, not "not answering".
    client = ctx.service_client(st)
    try:
        return ctx.run(client.status())
    except Exception:
        return None  # status must still say where the service is when it is too busy to answer


def print_status(ctx: CliContext, st: ServiceState, live: ServiceStatus | None) -> None:
    pairs = [
        ("url", st.url),
        ("OpenAI base URL", st.url.rstrip("/") + "/v1"),
        ("pid", str(st.pid)),
        ("started", f"{when(st.started_at)} ({ago(st.started_at)})"),
        ("kind", "ingot service" if st.kind == "service" else "editor engine (JSON-RPC)"),
        ("version", st.version),
        ("home", st.home),
        ("log", st.log_file or str(log_path(ctx.home))),
    ]
    if live is not None:
        loaded = ", ".join(m.id for m in live.loaded) or "none"
        pairs += [
            ("cache", live.cache_path),
            ("loaded", loaded),
            ("requests", f"{live.active_requests} running, {live.queued_requests} queued"),
        ]
    else:
        pairs.append(("health", "not answering right now"))
    print_fields(pairs, title="The Ingot service is running.")


def start(ctx: CliContext, args: argparse.Namespace) -> int:
    res = start_service(
        ctx.home,
        host=args.host,
        port=args.port,
        idle_timeout=args.idle_timeout,
        api_key=args.api_key,
    )
    if res.note:
        note(res.note)
    if not res.started:
        note(f"The service is already running (pid {res.state.pid}).")
    live = _live_status(ctx, res.state)
    if ctx.json:
        print_json(status_object(ctx, res.state, live))
    else:
        print_status(ctx, res.state, live)
    return 0


def stop(ctx: CliContext, args: argparse.Namespace) -> int:
    st = stop_service(ctx.home)
    if st is None:
        say("No Ingot service is running.")
    else:
        say(f"Stopped the Ingot service (pid {st.pid}, {st.url}).")
    return 0


def restart(ctx: CliContext, args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    before = find_service(ctx.home)
    host, port = args.host, args.port
    if before is not None:
        # Same address as before unless told otherwise: the tools pointed at it keep working.
        u = urlsplit(before.url)
        host = host or u.hostname
        port = port if port is not None else u.port
        stop_service(ctx.home)
    args.host, args.port = host, port
    return start(ctx, args)


def status(ctx: CliContext, args: argparse.Namespace) -> int:
    st = find_service(ctx.home)
    live = _live_status(ctx, st) if st is not None else None
    if ctx.json:
        print_json(status_object(ctx, st, live))
    elif st is None:
        say("The Ingot service is not running.")
        note("Start it with `ingot service start`.")
    else:
        print_status(ctx, st, live)
    return 0 if st is not None else EXIT_NOT_RUNNING


def ps(ctx: CliContext, args: argparse.Namespace) -> int:
    st = find_service(ctx.home)
    if st is None:
        if ctx.json:
            print_json({"models": []})
        else:
            say("No Ingot service is running, so no model is loaded.")
        return 0
    live = ctx.run(ctx.service_client(st).status())
    if ctx.json:
        print_json({"models": live.loaded})
        return 0
    if not live.loaded:
        say(f"No model is loaded in the service at {st.url}.")
        return 0
    rows = [
        [
            mi.id,
            mi.device,
            mi.runtime,
            human_bytes(mi.memory_bytes),
            "kept"
            if (mi.ttl_seconds or 0) < 0
            else human_duration(mi.expires_in_seconds)
            if mi.expires_in_seconds is not None
            else "in use",
            str(mi.active_requests),
            str(mi.queued_requests),
        ]
        for mi in live.loaded
    ]
    cols = ["ID", "DEVICE", "RUNTIME", "MEMORY", "TTL LEFT", "RUNNING", "QUEUED"]
    print_table(cols, rows, right=("MEMORY", "TTL LEFT", "RUNNING", "QUEUED"))
    return 0


def logs(ctx: CliContext, args: argparse.Namespace) -> int:
    path = log_path(ctx.home)
    st = find_service(ctx.home)
    if st is not None and st.log_file:
        from pathlib import Path

        path = Path(st.log_file)
    if not path.is_file():
        raise CliError(
            f"There is no service log yet ({path}).", hint="`ingot service start` creates it."
        )
    with path.open("rb") as f:
        lines = f.read().decode("utf-8", errors="replace").splitlines()
        for line in lines[-args.lines :] if args.lines > 0 else []:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if not args.follow:
            return 0
        while True:  # Ctrl-C ends it (exit 130, as `tail -f`)
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.25)
