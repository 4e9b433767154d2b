"""Unit: the clients of a running service (the `ingot` CLI's HttpClient and a forwarding engine's
Forwarder) against small in-process aiohttp servers: events larger than aiohttp's line limit,
an idle-read timeout that stops a silent service without cutting a long stream short, and the
owner check (pid, process start time, proof of the secret) made before the secret is sent."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.test_utils import TestServer
from pydantic import BaseModel

from server.cli.client import CliError, ignore_progress
from server.cli.http import HttpClient
from server.jsonrpc.forwarding import Forwarder, OwnerUnreachable
from server.secret import HEADER, ensure_secret, health_proof
from server.service_http import EventTooLarge, read_events
from server.state import (
    ServiceState,
    live_state,
    owner_answers_as,
    process_started_at,
    read_state,
    write_state,
)

BIG = "x" * (1024 * 1024)  # 1 MiB: twice aiohttp's 512 KiB line limit


class _Plain(BaseModel):
    """A `done` payload, whatever it holds."""

    note: str = ""
    ok: bool = False


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start an aiohttp app with the given (method, path, handler) routes; yields its URL."""
    servers: list[TestServer] = []

    async def start(*routes: tuple[str, str, Route]) -> str:
        app = web.Application()
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for s in servers:
        await s.close()


async def _sse(request: web.Request, events: list[tuple[str, Any]], pause: float = 0) -> Any:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for event, data in events:
        await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        if pause:
            await asyncio.sleep(pause)
    await resp.write_eof()
    return resp


# -- SSE events over aiohttp's line limit ----------------------------------------------------------
async def test_an_event_over_the_line_limit_is_read_whole(serve: Any) -> None:
    async def big(request: web.Request) -> Any:
        return await _sse(request, [("progress", {"message": "m"}), ("done", {"text": BIG})])

    url = await serve(("GET", "/s", big))
    async with aiohttp.ClientSession() as s, s.get(url + "/s") as r:
        seen = [(e, json.loads(d)) async for e, d in read_events(r.content)]
    assert seen == [("progress", {"message": "m"}), ("done", {"text": BIG})]
    # What the clients did before: aiohttp's line reader raises on that line (not a ClientError).
    async with aiohttp.ClientSession() as s, s.get(url + "/s") as r:
        with pytest.raises(LineTooLong):
            async for _ in r.content:
                pass


async def test_an_event_over_the_client_cap_is_a_clear_error(serve: Any) -> None:
    async def big(request: web.Request) -> Any:
        return await _sse(request, [("done", {"text": BIG})])

    url = await serve(("GET", "/s", big))
    async with aiohttp.ClientSession() as s, s.get(url + "/s") as r:
        with pytest.raises(EventTooLarge):
            async for _ in read_events(r.content, max_event_bytes=64 * 1024):
                pass


async def test_the_cli_reads_an_event_over_the_line_limit(serve: Any) -> None:
    async def compile_(request: web.Request) -> Any:
        return await _sse(request, [("done", {"id": "m", "note": BIG})])

    url = await serve(("POST", "/ingot/v1/models/compile", compile_))
    client = HttpClient(url)
    try:
        done = await client._stream_operation(
            "/ingot/v1/models/compile", {}, ignore_progress, result=_Plain
        )
        assert done.note == BIG
    finally:
        await client.close()


# -- idle read timeout ------------------------------------------------------------------------------
async def test_a_silent_service_times_out_but_a_slow_stream_does_not(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wide margins: a loaded CI machine may stall the loop for a few hundred ms.
    monkeypatch.setenv("INGOT_CLIENT_IDLE_TIMEOUT_S", "1.5")

    async def silent(request: web.Request) -> Any:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: progress\ndata: {"message": "started"}\n\n')
        await asyncio.sleep(30)  # hung: never another byte
        return resp

    async def steady(request: web.Request) -> Any:
        # 3 s in all, never silent for 1.5 s: a total timeout would cut it, an idle one must not.
        events = [("progress", {"message": str(i)}) for i in range(15)]
        return await _sse(request, [*events, ("done", {"ok": True})], pause=0.2)

    url = await serve(
        ("POST", "/ingot/v1/models/a/download", silent),
        ("POST", "/ingot/v1/models/b/download", steady),
    )
    client = HttpClient(url)
    try:
        with pytest.raises(CliError) as e:
            async with asyncio.timeout(10):
                await client._stream_operation(
                    "/ingot/v1/models/a/download", None, ignore_progress, result=_Plain
                )
        assert "stopped answering" in e.value.message and "INGOT_CLIENT_IDLE_TIMEOUT_S" in str(
            e.value.hint
        )
        seen: list[str] = []
        done = await client._stream_operation(
            "/ingot/v1/models/b/download", None, lambda p: seen.append(p.message), result=_Plain
        )
        assert done.ok and len(seen) == 15
    finally:
        await client.close()


async def test_the_forwarder_gives_up_on_a_silent_owner(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wide margins: a loaded CI machine may stall the loop for a few hundred ms.
    monkeypatch.setenv("INGOT_CLIENT_IDLE_TIMEOUT_S", "1.5")

    async def silent(request: web.Request) -> Any:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(30)
        return resp

    url = await serve(("POST", "/ingot/v1/chat", silent))
    fwd = Forwarder(url)
    try:
        with pytest.raises(OwnerUnreachable) as e:
            async with asyncio.timeout(10):
                await fwd.stream("ingot/chat", {"model": "m", "messages": []}, lambda *_: None)
        # It may have run there: not "refused", so the engine does not take the home over.
        assert not e.value.refused and "read timeout" in str(e.value)
    finally:
        await fwd.close()


# -- owner check ------------------------------------------------------------------------------------
def _me(url: str, home: Path) -> ServiceState:
    return ServiceState(
        pid=os.getpid(),
        url=url,
        started_at=0.0,
        kind="service",
        version="0",
        home=str(home),
        process_started_at=process_started_at(os.getpid()),
    )


def test_a_reused_pid_is_not_the_owner(tmp_path: Path) -> None:
    st = _me("http://127.0.0.1:9", tmp_path)
    write_state(tmp_path, st)
    assert live_state(tmp_path) == st
    assert st.process_started_at is not None
    # The same pid, but a process that started an hour later than the one that wrote the file.
    write_state(tmp_path, replace(st, process_started_at=st.process_started_at - 3600))
    assert live_state(tmp_path) is None
    assert read_state(tmp_path) is None, "the stale file is removed"


def test_write_state_records_the_process_start_time(tmp_path: Path) -> None:
    st = replace(_me("http://127.0.0.1:9", tmp_path), process_started_at=None)
    write_state(tmp_path, st)
    saved = read_state(tmp_path)
    assert saved is not None and saved.process_started_at == process_started_at(os.getpid())


def test_a_state_file_from_a_newer_version_still_names_the_owner(tmp_path: Path) -> None:
    write_state(tmp_path, _me("http://127.0.0.1:9", tmp_path))
    path = tmp_path / "service.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**data, "added_later": 1}), encoding="utf-8")
    st = read_state(tmp_path)
    assert st is not None and st.pid == os.getpid()


def test_health_answers_are_checked(tmp_path: Path) -> None:
    secret = ensure_secret(tmp_path)
    st = _me("http://127.0.0.1:9", tmp_path)
    assert st.process_started_at is not None
    good = {"pid": st.pid, "processStartedAt": st.process_started_at}
    assert owner_answers_as(st, good)
    assert not owner_answers_as(st, {**good, "pid": st.pid + 1})
    assert not owner_answers_as(st, {**good, "processStartedAt": st.process_started_at + 60})
    assert not owner_answers_as(st, {"status": "ok"})  # says nothing: not a current owner
    assert not owner_answers_as(st, "ok")
    proof = health_proof(secret.value, "c1")
    assert owner_answers_as(st, {**good, "proof": proof}, "c1", secret)
    assert not owner_answers_as(st, {**good, "proof": proof}, "c2", secret)  # replayed
    assert not owner_answers_as(st, good, "c1", secret)  # no proof
    # An owner of an older version (no start time in its file, none in /health) still passes.
    old = replace(st, process_started_at=None)
    assert owner_answers_as(old, {"status": "ok"})


async def test_the_forwarder_sends_the_secret_only_to_the_owner(serve: Any, tmp_path: Path) -> None:
    secret = ensure_secret(tmp_path)
    seen: list[str | None] = []
    who = {"pid": os.getpid()}

    async def health(request: web.Request) -> Any:
        challenge = request.query.get("challenge", "")
        seen.append(request.headers.get(HEADER))
        return web.json_response(
            {
                "status": "ok",
                "pid": who["pid"],
                "processStartedAt": process_started_at(os.getpid()),
                "proof": health_proof(secret.value, challenge),
            }
        )

    async def status(request: web.Request) -> Any:
        seen.append(request.headers.get(HEADER))
        return web.json_response({"pid": os.getpid()})

    url = await serve(("GET", "/health", health), ("GET", "/ingot/v1/status", status))
    owner = _me(url, tmp_path)
    write_state(tmp_path, owner)
    fwd = Forwarder(url, owner=owner, home=tmp_path)
    try:
        assert await fwd.call_status() == {"pid": os.getpid()}
        assert seen == [None, secret.value], "health first, without the secret; then with it"

        # Another process answers at the owner's address (after a crash, a reused port).
        seen.clear()
        who["pid"] = os.getpid() + 1
        fwd._failed()
        with pytest.raises(OwnerUnreachable) as e:
            await fwd.call_status()
        assert e.value.refused, "never reached the owner: the engine may take the home over"
        assert seen == [None], "the impostor never saw the secret"
    finally:
        await fwd.close()


async def test_the_forwarder_refuses_an_owner_that_cannot_prove_the_secret(
    serve: Any, tmp_path: Path
) -> None:
    ensure_secret(tmp_path)
    statuses: list[str | None] = []

    async def health(request: web.Request) -> Any:
        # Right pid and start time (anyone can read those), but it does not know the secret.
        return web.json_response(
            {
                "status": "ok",
                "pid": os.getpid(),
                "processStartedAt": process_started_at(os.getpid()),
                "proof": "0" * 64,
            }
        )

    async def status(request: web.Request) -> Any:
        statuses.append(request.headers.get(HEADER))
        return web.json_response({})

    url = await serve(("GET", "/health", health), ("GET", "/ingot/v1/status", status))
    owner = _me(url, tmp_path)
    fwd = Forwarder(url, owner=owner, home=tmp_path)
    try:
        with pytest.raises(OwnerUnreachable):
            await fwd.call_status()
        assert statuses == []
    finally:
        await fwd.close()


def test_the_cli_will_not_send_the_secret_to_another_process(tmp_path: Path) -> None:
    """find_service refuses an owner whose address is answered by someone else."""
    import http.server
    import threading

    from server.cli.launcher import find_service

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "pid": 1, "processStartedAt": 0.0}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ensure_secret(tmp_path)
        write_state(tmp_path, _me(f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path))
        with pytest.raises(CliError) as e:
            find_service(tmp_path)
        assert "will not send it" in e.value.message and e.value.hint
    finally:
        httpd.shutdown()
        httpd.server_close()
