"""Unit: the home secret — its file (made 0600 and atomically, refused when another user could read
or replace it) and the REST guard that requires it on Ingot's own and Foundry's state-changing
routes (not on the OpenAI ones), in the OpenAI error shape, and trusts who proved it."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from protocol.jsonrpc import generation as g
from server.rest.errors import error_middleware
from server.rest.limits import rest_priority
from server.rest.security import Guard, changes_state
from server.rest.settings import RestSettings
from server.secret import (
    HEADER,
    SecretFileError,
    ensure_secret,
    read_secret,
    secret_path,
)

PROTECTED = [
    ("GET", "/ingot/v1/status"),
    ("POST", "/ingot/v1/cache/verify"),
    ("POST", "/ingot/v1/chat"),
    ("POST", "/ingot/v1/embed"),
    ("DELETE", "/ingot/v1/models/m"),
    ("GET", "/openai/load/m"),
    ("GET", "/models/unload/m"),
    ("POST", "/openai/download"),
]
OPEN = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/openai/status"),
    ("GET", "/openai/models"),
    ("GET", "/foundry/list"),
]


async def _priority(request: web.Request) -> web.Response:
    """Stands in for a generation route: what priority a caller asking for `interactive` gets."""
    p = g.ChatParams.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "priority": "interactive"}
    )
    return web.json_response({"priority": rest_priority(p, trusted=False).priority})


@changes_state
async def _state_get(request: web.Request) -> web.Response:
    return await _priority(request)


def _app(settings: RestSettings) -> web.Application:
    guard = Guard(settings)
    app = web.Application(middlewares=[error_middleware, guard.middleware])
    for method, path in PROTECTED + OPEN:
        changing = method == "GET" and path.startswith(("/openai/load", "/models/unload"))
        app.router.add_route(method, path, _state_get if changing else _priority)
    return app


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[RestSettings], Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(settings: RestSettings) -> TestClient[Any, Any]:
        c: TestClient[Any, Any] = TestClient(TestServer(_app(settings)))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_routes_need_the_secret(
    client_for: Any, tmp_path: Path, method: str, path: str
) -> None:
    secret = ensure_secret(tmp_path)
    c = await client_for(RestSettings(secret=secret))
    json_body = {} if method == "POST" else None
    async with c.request(method, path, json=json_body) as r:
        assert r.status == 401
        err = (await r.json())["error"]
    assert err["type"] == "authentication_error" and err["code"] == "invalid_secret"
    assert str(secret_path(tmp_path)) in err["message"] and "`ingot` CLI" in err["ingot"]["hint"]
    assert secret.value not in err["message"]
    async with c.request(method, path, json=json_body, headers={HEADER: "nope" * 10}) as r:
        assert r.status == 401
        assert "wrong" in (await r.json())["error"]["message"]
    for headers in ({HEADER: secret.value}, {"Authorization": f"Bearer {secret.value}"}):
        async with c.request(method, path, json=json_body, headers=headers) as r:
            assert r.status == 200, await r.text()
            # A caller that proved the secret keeps `interactive` (a second editor window).
            assert (await r.json())["priority"] == "interactive"


@pytest.mark.parametrize(("method", "path"), OPEN)
async def test_openai_and_read_only_routes_stay_open(
    client_for: Any, tmp_path: Path, method: str, path: str
) -> None:
    c = await client_for(RestSettings(secret=ensure_secret(tmp_path)))
    async with c.request(method, path, json={} if method == "POST" else None) as r:
        assert r.status == 200
        # A caller without the secret does not jump ahead of the editor.
        assert (await r.json())["priority"] == "chat"


async def test_without_a_home_the_protected_routes_are_closed(client_for: Any) -> None:
    c = await client_for(RestSettings())
    async with c.get("/ingot/v1/status", headers={HEADER: "x" * 43}) as r:
        assert r.status == 401
    async with c.get("/v1/models") as r:
        assert r.status == 200


async def test_with_an_api_key_the_key_guards_every_route(client_for: Any, tmp_path: Path) -> None:
    secret = ensure_secret(tmp_path)
    c = await client_for(RestSettings(api_key="sk-k", secret=secret))
    key = {"Authorization": "Bearer sk-k"}
    async with c.get("/ingot/v1/status", headers=key) as r:
        assert r.status == 200 and (await r.json())["priority"] == "interactive"
    async with c.get("/ingot/v1/status", headers={HEADER: secret.value}) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"
    async with c.get("/health") as r:
        assert r.status == 200


def test_settings_never_show_the_secret(tmp_path: Path) -> None:
    secret = ensure_secret(tmp_path)
    settings = RestSettings(api_key="sk-visible", secret=secret)
    assert secret.value not in repr(settings) and secret.value not in repr(secret)
    assert "sk-visible" not in repr(settings)


# -- the file -------------------------------------------------------------------------------------
def test_the_secret_is_made_once_and_private(tmp_path: Path) -> None:
    old = os.umask(0o000)  # a permissive umask must not widen the file
    try:
        first = ensure_secret(tmp_path)
    finally:
        os.umask(old)
    mode = os.stat(secret_path(tmp_path)).st_mode
    assert stat.S_IMODE(mode) == 0o600 and stat.S_ISREG(mode)
    assert len(first.value) >= 32
    assert ensure_secret(tmp_path) == first == read_secret(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["rest-secret"], "no temporary file left"


def test_processes_starting_at_once_agree_on_one_secret(tmp_path: Path) -> None:
    got: list[str] = []
    barrier = threading.Barrier(8)

    def make() -> None:
        barrier.wait()
        got.append(ensure_secret(tmp_path).value)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    ensure_secret(tmp_path)
    path = secret_path(tmp_path)
    path.chmod(0o644)
    with pytest.raises(SecretFileError) as e:
        read_secret(tmp_path)
    assert "0644" in e.value.message and f"chmod 600 {path}" in e.value.hint
    with pytest.raises(SecretFileError):
        ensure_secret(tmp_path)  # never silently replaced either
    path.chmod(0o600)
    assert read_secret(tmp_path) is not None


def test_a_link_or_a_damaged_file_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ensure_secret(elsewhere)
    home = tmp_path / "home"
    home.mkdir()
    secret_path(home).symlink_to(secret_path(elsewhere))
    with pytest.raises(SecretFileError):
        read_secret(home)
    secret_path(home).unlink()
    fd = os.open(secret_path(home), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short\n")
    os.close(fd)
    with pytest.raises(SecretFileError) as e:
        read_secret(home)
    assert "damaged" in e.value.message


def test_no_home_yet_means_no_secret(tmp_path: Path) -> None:
    assert read_secret(tmp_path / "nowhere") is None


async def test_only_the_secret_lets_a_caller_name_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an API key, the key opens /ingot/v1, but attaching a remote with apiKeyEnv would send
    that variable of the engine's environment to the caller's URL: it needs the home secret."""
    from server.rest.ingot_routes import IngotRoutes
    from server.rest.settings import ServerInfo

    attached: list[Any] = []

    class Service:
        async def attach_remote(self, *a: Any, **kw: Any) -> Any:
            attached.append(kw)
            raise RuntimeError("stop here")

    secret = ensure_secret(tmp_path)
    settings = RestSettings(api_key="sk-k", secret=secret)
    app = web.Application(middlewares=[error_middleware, Guard(settings).middleware])
    IngotRoutes(Service(), settings, ServerInfo()).add_to(app.router)  # type: ignore[arg-type]
    body = {"url": "http://127.0.0.1:9", "apiKeyEnv": "HF_TOKEN"}
    async with TestClient(TestServer(app)) as c:
        key = {"Authorization": "Bearer sk-k"}
        async with c.post("/ingot/v1/remotes", json=body, headers=key) as r:
            assert r.status == 403 and (await r.json())["error"]["param"] == "apiKeyEnv"
        assert attached == []
        async with c.post("/ingot/v1/remotes", json=body, headers={**key, HEADER: secret.value}):
            pass
        assert attached, "the engine's own user (who has the secret) may"
