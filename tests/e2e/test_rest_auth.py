"""End-to-end: the home secret against a real `python -m server.rest` process. Ingot's own routes
and Foundry's state-changing ones refuse a caller without it (or with a wrong one) with a 401 that
says where it is; the OpenAI routes stay open on loopback; the file is 0600; the secret never
shows in the log, a command line or a child process's environment; the CLI and a forwarding
engine send it for the user; a secret file others could read stops the server from starting."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from server.secret import HEADER, read_secret, secret_path
from tests.e2e import cli_helpers
from tests.e2e.rest_server import RestServer, copy_home, running, spawn
from tests.e2e.rpc_client import engine

MODEL = "smollm2-135m"
# One route of each protected class, with a body that the route would refuse with a 4xx of its own
# once let in (so that letting it in costs no model work).
PROTECTED: list[tuple[str, str, Any]] = [
    ("GET", "/ingot/v1/status", None),  # management, read
    ("POST", "/ingot/v1/cache/move", {}),  # management, change
    ("GET", "/ingot/v1/events", None),  # live event stream
    ("POST", "/ingot/v1/chat", {}),  # native generation
    ("POST", "/ingot/v1/complete", {}),
    ("POST", "/ingot/v1/embed", {}),
    ("DELETE", "/ingot/v1/models/no-such-model", None),
    ("GET", "/openai/unload/no-such-model", None),  # Foundry, changes state
    ("GET", "/models/load/no-such-model", None),
    ("POST", "/openai/download", {}),
]
OPEN: list[tuple[str, str, Any]] = [
    ("GET", "/health", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {}),  # open: its 400 is about the body, not who sent it
    ("GET", "/openai/status", None),
    ("GET", "/openai/loadedmodels", None),
    ("GET", "/foundry/list", None),
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("rest-auth") / "home")
    with running(home) as s:
        yield s


@pytest.fixture
async def anon(server: RestServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield session


def _secret(server: RestServer) -> str:
    secret = read_secret(server.home)
    assert secret is not None
    return secret.value


async def _status(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.request(method, path, json=body, headers=headers) as r:
        if r.content_type == "text/event-stream":
            return r.status, None  # the event stream: let in, and it would run until closed
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
async def test_protected_routes_refuse_a_caller_without_the_secret(
    server: RestServer, anon: aiohttp.ClientSession, method: str, path: str, body: Any
) -> None:
    status, answer = await _status(anon, method, path, body, {})
    assert status == 401, answer
    err = answer["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["type"] == "authentication_error" and err["code"] == "invalid_secret"
    assert str(secret_path(server.home)) in err["message"] and "ingot` CLI" in err["message"]
    assert _secret(server) not in json.dumps(answer)

    status, answer = await _status(anon, method, path, body, {HEADER: "not-the-secret" * 3})
    assert status == 401 and answer["error"]["code"] == "invalid_secret"

    for headers in ({HEADER: _secret(server)}, {"Authorization": f"Bearer {_secret(server)}"}):
        status, answer = await _status(anon, method, path, body, headers)
        assert status != 401 and status < 500, answer


@pytest.mark.parametrize(("method", "path", "body"), OPEN, ids=[p for _, p, _ in OPEN])
async def test_openai_and_read_only_routes_stay_open_on_loopback(
    anon: aiohttp.ClientSession, method: str, path: str, body: Any
) -> None:
    status, answer = await _status(anon, method, path, body, {})
    assert status in (200, 400), answer


def test_the_secret_file_is_private(server: RestServer) -> None:
    st = secret_path(server.home).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISREG(st.st_mode)
    health = server.get_json("/health")
    assert health["pid"] == server.proc.pid and "proof" not in health


async def test_the_secret_stays_out_of_logs_command_lines_and_children(
    server: RestServer, anon: aiohttp.ClientSession
) -> None:
    secret = _secret(server)
    headers = {HEADER: secret}
    # Load a model, so the service has a worker process whose command line and environment
    # can be read too.
    async with anon.post(f"/ingot/v1/models/{MODEL}/load", json={"ttl": 60}, headers=headers) as r:
        assert r.status == 200, await r.text()
    try:
        me = psutil.Process(server.proc.pid)
        procs = [me, *me.children(recursive=True)]
        assert len(procs) > 1, "the loaded model runs in a worker process"
        for p in procs:
            assert secret not in " ".join(p.cmdline())
            assert all(secret not in v for v in p.environ().values())
    finally:
        async with anon.post(
            f"/ingot/v1/models/{MODEL}/unload", json={"force": True}, headers=headers
        ) as r:
            assert r.status == 200
    assert secret not in server.log_text()


def test_the_cli_sends_the_secret(server: RestServer) -> None:
    status = cli_helpers.run_json(server.home, "service", "status")
    assert status["running"] and status["pid"] == server.proc.pid
    assert status["status"] is not None, "the live status needs the secret"
    assert status["status"]["pid"] == server.proc.pid


async def test_a_forwarding_engine_sends_the_secret(server: RestServer) -> None:
    async with engine(server.home) as c:
        ready = await c.wait_for("ingot/serviceReady")
        assert ready["mode"] == "forwarding" and ready["url"] == server.url
        info = await c.request("ingot/cache/info")
        assert info["path"]


def test_a_secret_file_others_can_read_stops_the_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = secret_path(home)
    path.write_text("s" * 43 + "\n")
    path.chmod(0o644)
    proc, log, _ = spawn(home)
    assert proc.wait(60) == 2
    text = log.read_text()
    assert f"chmod 600 {path}" in text and "Traceback" not in text
    assert "s" * 43 not in text


def test_service_status_names_a_secret_file_that_must_not_be_used(server: RestServer) -> None:
    """`ingot service status` says what to fix, not that the service is "not answering"."""
    path = secret_path(server.home)
    path.chmod(0o644)
    try:
        r = cli_helpers.run(server.home, "service", "status")
    finally:
        path.chmod(0o600)
    assert r.returncode != 0
    assert f"chmod 600 {path}" in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert "not answering" not in r.stdout
