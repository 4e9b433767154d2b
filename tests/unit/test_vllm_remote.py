"""A remote vLLM deployment attached by URL through a catalog file: routed, streamed, measured and
managed by a real engine, against a small fake of vLLM's HTTP API on a loopback port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.errors import LoadFailed
from engine.generation import SamplingParams
from engine.requests import ChatRequest, Delta, GenerationResult
from engine.runtimes.vllm_instance import VllmInstance

WORDS = ["Hello", " from", " the", " cluster", "."]


def fake_vllm(seen: list[dict[str, Any]]) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer sekret":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"data": [{"id": "big-model", "max_model_len": 4096}]})

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        n = 7 if "messages" in body else len(body["prompt"].split())
        return web.json_response({"count": n, "tokens": list(range(1, n + 1))})

    async def detokenize(request: web.Request) -> web.Response:
        return web.json_response({"prompt": "<s>user: hi</s><s>assistant:"})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("Authorization")})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, w in enumerate(WORDS, 1):
            chunk = {
                "choices": [{"text": w, "finish_reason": "stop" if i == len(WORDS) else None}],
                "usage": {"prompt_tokens": 7, "completion_tokens": i},
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text='vllm:num_requests_running{engine="0"} 2.0\n')

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/metrics", metrics)
    return app


@pytest.fixture
async def remote_url() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    runner = web.AppRunner(fake_vllm(seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def remote_catalog(path: Path, url: str) -> Path:
    entry = {
        "name": "cluster-model",
        "version": 1,
        "alias": "cluster",
        "display_name": "A model on a vLLM cluster",
        "publisher": "test",
        "device": "cuda",
        "framework": "vllm",
        "source": {"kind": "remote", "url": url, "served_model": "big-model"},
        "size_bytes": 0,
        "context_length": 32768,
        "license": "MIT",
        "extra": {"api_key_env": "TEST_CLUSTER_KEY", "vllm": {"max_num_seqs": 32}},
    }
    path.write_text(json.dumps({"schema": 1, "variants": [entry]}), encoding="utf-8")
    return path


async def test_a_remote_deployment_is_routed_streamed_and_measured(
    tmp_path: Path,
    remote_url: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = remote_url
    monkeypatch.setenv("TEST_CLUSTER_KEY", "sekret")
    cat = remote_catalog(tmp_path / "cluster.json", url)
    svc = build_engine(EngineConfig(home=tmp_path / "home", extra_catalogs=(cat,)))
    await svc.start()
    try:
        view = svc.model_info("cluster")
        assert view.cached and view.offered and view.runtime_unavailable is None
        req = ChatRequest(
            model="cluster",
            messages=[{"role": "user", "content": "hi"}],
            params=SamplingParams(max_tokens=16, temperature=0.5, seed=1),
        )
        events = [ev async for ev in svc.chat(req)]
        text = "".join(ev.text for ev in events if isinstance(ev, Delta))
        result = events[-1]
        assert isinstance(result, GenerationResult)
        assert text == result.text == "Hello from the cluster."
        assert result.usage.prompt_tokens == 7 and result.usage.completion_tokens == 5
        assert result.record.runtime == "vllm" and result.record.device == "remote"
        body = seen[0]["body"]
        assert body["model"] == "big-model" and body["prompt"] == list(range(1, 8))
        assert (
            body["temperature"] == 0.5 and body["seed"] == 1 and seen[0]["auth"] == "Bearer sekret"
        )
        entry = svc.loader.get_loaded("cluster-model:1")
        assert entry is not None and isinstance(entry.instance, VllmInstance)
        # The deployment's own numbers: its context, the concurrency the catalog allows.
        assert entry.instance.context_length == 4096 and entry.scheduler.concurrency == 32
        assert (await entry.instance.runtime_metrics())["requests_running"] == 2.0
        assert entry.instance.describe()["remote"] is True
        assert await svc.unload("cluster")
    finally:
        await svc.close()


async def test_an_unreachable_or_unauthorised_deployment_fails_the_load_with_a_hint(
    tmp_path: Path, remote_url: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = remote_url
    cat = remote_catalog(tmp_path / "cluster.json", url)  # no TEST_CLUSTER_KEY: 401
    svc = build_engine(EngineConfig(home=tmp_path / "home", extra_catalogs=(cat,)))
    await svc.start()
    try:
        with pytest.raises(LoadFailed) as e:
            await svc.load("cluster")
        assert url in e.value.message and "api_key_env" in (e.value.hint or "")
    finally:
        await svc.close()
