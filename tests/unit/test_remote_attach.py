"""Remote vLLM deployments attached by URL (`ingot model attach`): the key file, /v1/models parsing,
names, health and the errors a deployment that is down, stalled or refusing turns into — against a
small fake of vLLM's HTTP API on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.errors import InvalidRequest, ModelNotFound, RemoteUnavailable
from engine.generation import SamplingParams
from engine.remotes import (
    KeyFileError,
    RemoteKeyStore,
    ServedModel,
    keys_path,
    normalize_url,
    parse_models,
    variant_names,
)
from engine.requests import ChatRequest, Delta, GenerationResult
from engine.service import EngineService
from protocol.errors import error_for
from server.rest.errors import from_ingot

KEY = "s3cret-key-for-the-cluster"
WORDS = ["Hello", " from", " far", " away", "."]


@dataclass
class Fake:
    url: str = ""
    stall: bool = False
    auth_seen: list[str | None] = field(default_factory=list)
    runner: web.AppRunner | None = None


def fake_vllm(fake: Fake) -> web.Application:
    def authorised(request: web.Request) -> bool:
        fake.auth_seen.append(request.headers.get("Authorization"))
        return request.headers.get("Authorization") == f"Bearer {KEY}"

    def refused() -> web.Response:
        return web.json_response({"error": "Unauthorized"}, status=401)

    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def models(request: web.Request) -> web.Response:
        if not authorised(request):
            return refused()
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "org/Big-Model", "object": "model", "max_model_len": 8192},
                    {"id": "small", "object": "model", "max_model_len": 2048},
                    {"object": "model"},  # no id: skipped
                ],
            }
        )

    async def tokenize(request: web.Request) -> web.Response:
        if not authorised(request):
            return refused()
        return web.json_response({"count": 5, "tokens": [1, 2, 3, 4, 5]})

    async def detokenize(request: web.Request) -> web.Response:
        return web.json_response({"prompt": "<user>hi</user><assistant>"})

    async def completions(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return refused()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, w in enumerate(WORDS, 1):
            chunk = {
                "choices": [{"text": w, "finish_reason": "stop" if i == len(WORDS) else None}],
                "usage": {"prompt_tokens": 5, "completion_tokens": i},
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if fake.stall:
                await asyncio.sleep(3600)  # a deployment that hangs mid-stream
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/v1/completions", completions)
    return app


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    f = Fake()
    f.runner = web.AppRunner(fake_vllm(f), shutdown_timeout=0.1)
    await f.runner.setup()
    site = web.TCPSite(f.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    f.url = f"http://127.0.0.1:{port}"
    try:
        yield f
    finally:
        await f.runner.cleanup()


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[EngineService]:
    service = build_engine(EngineConfig(home=tmp_path / "home"))
    await service.start()
    try:
        yield service
    finally:
        await service.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat(model: str) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        params=SamplingParams(max_tokens=8),
    )


# -- the key file --------------------------------------------------------------------------------


def test_the_key_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    store = RemoteKeyStore(tmp_path)
    assert store.get("a") is None
    store.put("a", "k1")
    store.put("b", "k2")
    assert stat.S_IMODE(keys_path(tmp_path).stat().st_mode) == 0o600
    assert store.get("a") == "k1" and store.get("b") == "k2"
    assert store.remove("a") and not store.remove("a")
    assert json.loads(keys_path(tmp_path).read_text())["keys"] == {"b": "k2"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_key_file_others_can_read_is_refused_with_a_fix(tmp_path: Path) -> None:
    store = RemoteKeyStore(tmp_path)
    store.put("a", "k1")
    os.chmod(keys_path(tmp_path), 0o644)
    with pytest.raises(KeyFileError) as e:
        store.get("a")
    assert "0644" in e.value.message and "chmod 600" in (e.value.hint or "")
    keys_path(tmp_path).write_text("not json")
    os.chmod(keys_path(tmp_path), 0o600)
    with pytest.raises(KeyFileError, match="damaged"):
        store.get("a")


# -- URLs, /v1/models and names -----------------------------------------------------------------


def test_urls_are_normalised_and_bad_ones_refused() -> None:
    assert normalize_url("http://Gpu-Node:8000/v1/") == "http://gpu-node:8000"
    assert normalize_url(" https://proxy.example/vllm/ ") == "https://proxy.example/vllm"
    for bad in ("gpu-node:8000", "ftp://x", "http://", "http://u:p@host:1", "http://h:99999"):
        with pytest.raises(InvalidRequest) as e:
            normalize_url(bad)
        assert e.value.data["param"] == "url", bad


def test_v1_models_is_parsed_with_vllms_max_model_len() -> None:
    data = {"data": [{"id": "a", "max_model_len": 4096}, {"id": "b"}, {"x": 1}, "junk"]}
    assert parse_models(data) == [ServedModel("a", 4096), ServedModel("b", None)]
    with pytest.raises(ValueError, match="no `data` list"):
        parse_models({"object": "error"})


def test_variant_names_follow_the_registration_rules() -> None:
    two = [ServedModel("org/Big-Model"), ServedModel("small")]
    assert variant_names(None, two) == ["big-model", "small"]
    assert variant_names("cluster", two) == ["cluster-big-model", "cluster-small"]
    assert variant_names("cluster", two[:1]) == ["cluster"]
    with pytest.raises(InvalidRequest):
        variant_names("bad name:1", two[:1])


# -- attach, list, detach -----------------------------------------------------------------------


async def test_attach_lists_each_served_model_and_never_writes_the_key_to_the_catalog(
    svc: EngineService, fake: Fake
) -> None:
    r = await svc.attach_remote(fake.url + "/v1", api_key=KEY, name="cluster")
    assert r.name == "cluster" and r.url == fake.url and r.key == "stored"
    by_name = {v.name: v for v in r.variants}
    assert set(by_name) == {"cluster-big-model", "cluster-small"}
    big = by_name["cluster-big-model"]
    assert big.context_length == 8192 and big.size_bytes == 0
    assert big.source.kind == "remote" and big.source.served_model == "org/Big-Model"
    assert fake.auth_seen[-1] == f"Bearer {KEY}"
    home = svc.config.home
    registered = (home / "registered.json").read_text()
    assert KEY not in registered and '"remote"' in registered
    assert RemoteKeyStore(home).get("cluster") == KEY
    assert stat.S_IMODE(keys_path(home).stat().st_mode) == 0o600
    view = svc.model_info("cluster-small")
    assert view.cached and view.offered and view.registered and view.fit.fits
    assert [x.name for x in svc.list_remotes()] == ["cluster"]
    # A restarted engine (a fresh catalog from the same home) still has it.
    again = build_engine(EngineConfig(home=home))
    assert [x.name for x in again.list_remotes()] == ["cluster"]


async def test_chat_streams_from_the_attached_model_and_detach_forgets_it(
    svc: EngineService, fake: Fake
) -> None:
    await svc.attach_remote(fake.url, api_key=KEY, name="cluster")
    events = [ev async for ev in svc.chat(chat("cluster-small"))]
    text = "".join(ev.text for ev in events if isinstance(ev, Delta))
    assert isinstance(events[-1], GenerationResult) and text == "Hello from far away."
    assert events[-1].record.device == "remote"
    entry = svc.loader.get_loaded("cluster-small:1")
    assert entry is not None and entry.instance.describe()["health"] == "ok"
    detached = await svc.detach_remote(fake.url)  # by URL; by name works too
    assert detached.name == "cluster" and svc.loader.get_loaded("cluster-small:1") is None
    assert svc.list_remotes() == [] and RemoteKeyStore(svc.config.home).get("cluster") is None
    with pytest.raises(ModelNotFound):
        svc.resolve("cluster-small")
    with pytest.raises(ModelNotFound):
        await svc.detach_remote("cluster")


async def test_removing_the_last_remote_model_forgets_its_key(
    svc: EngineService, fake: Fake
) -> None:
    await svc.attach_remote(fake.url, api_key=KEY, name="cluster")
    assert await svc.delete("cluster-small")
    assert RemoteKeyStore(svc.config.home).get("cluster") == KEY, "big-model still uses it"
    assert await svc.delete("cluster-big-model")
    assert RemoteKeyStore(svc.config.home).get("cluster") is None
    assert svc.list_remotes() == []


async def test_attach_errors_say_what_to_check(svc: EngineService, fake: Fake) -> None:
    with pytest.raises(InvalidRequest) as e:
        await svc.attach_remote(fake.url, api_key="wrong", name="cluster")
    assert e.value.data["param"] == "apiKey" and "401" in e.value.message
    with pytest.raises(InvalidRequest) as e:
        await svc.attach_remote(fake.url, name="cluster")  # no key at all
    assert e.value.data["param"] == "apiKey" and "no API key" in e.value.message
    dead = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(InvalidRequest) as e:
        await svc.attach_remote(dead, api_key=KEY)
    assert e.value.data["param"] == "url" and "curl" in (e.value.hint or "")
    with pytest.raises(InvalidRequest) as e:
        await svc.attach_remote(fake.url, api_key_env="INGOT_TEST_NO_SUCH_KEY")
    assert e.value.data["param"] == "apiKeyEnv"
    # A variable not named like a secret would reach the engine's child processes.
    with pytest.raises(InvalidRequest) as e:
        await svc.attach_remote(fake.url, api_key_env="CLUSTER_ADDRESS")
    assert e.value.data["param"] == "apiKeyEnv" and "named like a secret" in e.value.message
    # A catalog model's alias is not free for an attachment.
    with pytest.raises(InvalidRequest) as e:
        await svc.attach_remote(fake.url + "/", api_key=KEY, name="smollm2-135m")
    assert "catalog" in e.value.message
    assert svc.list_remotes() == [] and not keys_path(svc.config.home).exists()


async def test_a_key_from_the_environment_is_referenced_not_stored(
    svc: EngineService, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGOT_TEST_CLUSTER_KEY", KEY)
    r = await svc.attach_remote(fake.url, api_key_env="INGOT_TEST_CLUSTER_KEY")
    assert r.key == "env" and r.api_key_env == "INGOT_TEST_CLUSTER_KEY"
    assert {v.name for v in r.variants} == {"big-model", "small"}
    assert not keys_path(svc.config.home).exists()
    events = [ev async for ev in svc.chat(chat("small"))]
    assert isinstance(events[-1], GenerationResult)


# -- a deployment that goes down, stalls or refuses ---------------------------------------------


async def test_a_deployment_that_went_down_is_a_502_within_seconds(
    svc: EngineService, fake: Fake
) -> None:
    await svc.attach_remote(fake.url, api_key=KEY, name="cluster")
    [ev async for ev in svc.chat(chat("cluster-small"))]
    assert fake.runner is not None
    await fake.runner.cleanup()
    started = time.monotonic()
    with pytest.raises(RemoteUnavailable) as e:
        [ev async for ev in svc.chat(chat("cluster-small"))]
    assert time.monotonic() - started < 5
    assert fake.url in e.value.message and "curl" in (e.value.hint or "")
    entry = svc.loader.get_loaded("cluster-small:1")
    assert entry is not None
    info = entry.instance.describe()
    assert info["health"] == "down" and info["health_error"]
    api = from_ingot(e.value)
    assert api.status == 502 and api.body()["error"]["code"] == "remote_unavailable"


async def test_a_stalled_stream_fails_within_the_read_timeout(
    svc: EngineService, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGOT_REMOTE_READ_TIMEOUT_S", "0.5")
    await svc.attach_remote(fake.url, api_key=KEY, name="cluster")
    fake.stall = True
    started = time.monotonic()
    with pytest.raises(RemoteUnavailable) as e:
        [ev async for ev in svc.chat(chat("cluster-small"))]
    assert time.monotonic() - started < 5
    assert "read timeout" in e.value.message


async def test_a_key_the_deployment_no_longer_takes_is_a_502_that_says_so(
    svc: EngineService, fake: Fake
) -> None:
    await svc.attach_remote(fake.url, api_key=KEY, name="cluster")
    RemoteKeyStore(svc.config.home).put("cluster", "rotated-elsewhere")
    with pytest.raises(RemoteUnavailable) as e:
        await svc.load("cluster-small")
    assert "refused" in e.value.message and "--api-key" in (e.value.hint or "")


def test_remote_unavailable_maps_to_502_over_both_protocols() -> None:
    code = error_for("remote_unavailable")
    assert code.http_status == 502 and code.code == -32031 and code.openai_type == "server_error"
    assert RemoteUnavailable.kind == "remote_unavailable"


def test_a_forwarding_engine_sends_the_remote_methods_to_the_owners_routes() -> None:
    from server.jsonrpc.forwarding import QUICK, ROUTES

    params = {"url": "http://gpu-node:8000", "apiKey": KEY, "name": "cluster"}
    verb, path, body = ROUTES["ingot/remote/attach"]
    assert (verb, path(params), body(params)) == ("POST", "/ingot/v1/remotes", params)
    verb, path, body = ROUTES["ingot/remote/detach"]
    assert verb == "DELETE" and body({}) is None
    assert (
        path({"remote": "http://gpu-node:8000"}) == "/ingot/v1/remotes/http%3A%2F%2Fgpu-node%3A8000"
    )
    assert ROUTES["ingot/remote/list"][0] == "GET" and "ingot/remote/list" in QUICK
