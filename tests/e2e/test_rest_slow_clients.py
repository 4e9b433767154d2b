"""End-to-end: slow and greedy clients cannot hold the REST server's connections. Headers and
bodies must arrive within the read timeout, idle keep-alive connections close after it, and
connections over the cap get a 503 in the OpenAI error shape (the real server, short limits)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.rest_server import RestServer, copy_home, running

READ_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("rest-slow") / "home")
    env = {
        "INGOT_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "INGOT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with running(home, env=env) as s:
        yield s


async def _connect(server: RestServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.rsplit("/", 1)[1].rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection, which must be soon."""
    return await asyncio.wait_for(reader.read(), seconds)


def _status_and_error(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n", 1)[0].split()[1])
    err = json.loads(body)["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    return status, err


async def test_headers_that_never_finish_are_cut_off(server: RestServer) -> None:
    reader, writer = await _connect(server)
    started = time.monotonic()
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    await _closed_within(reader, READ_TIMEOUT_S + 5)
    assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9
    writer.close()


async def test_a_body_that_stops_arriving_gets_a_408(server: RestServer) -> None:
    reader, writer = await _connect(server)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
    )
    await writer.drain()
    status, err = _status_and_error(await _closed_within(reader, READ_TIMEOUT_S + 5))
    assert status == 408 and err["code"] == "request_timeout", err
    writer.close()


async def test_idle_keep_alive_connections_close(server: RestServer) -> None:
    reader, writer = await _connect(server)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    raw = await _closed_within(reader, READ_TIMEOUT_S + 5)
    assert raw.startswith(b"HTTP/1.1 200"), raw
    writer.close()


async def test_connections_over_the_cap_get_a_503(server: RestServer) -> None:
    held = [await _connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        reader, writer = await _connect(server)
        status, err = _status_and_error(await _closed_within(reader, 5))
        assert status == 503 and err["code"] == "too_many_connections", err
        writer.close()
    finally:
        for _, w in held:
            w.close()
    await asyncio.sleep(0.5)
    assert server.get_json("/v1/models")["object"] == "list"
