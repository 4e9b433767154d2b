"""End-to-end: a real vLLM server (the CPU build, on the default model) started on its own with
`--api-key`, as a deployment elsewhere would be, attached to a real engine with `ingot model attach`
and over JSON-RPC, then used through the REST port (the official openai client) and JSON-RPC
streaming with a cancel; a wrong key is refused at attach, a killed deployment is a prompt 502, and
detach forgets it. One vLLM server serves the module (a start costs ~30-70 s on two cores); the
tests run in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from engine.catalog.catalog import ModelCatalog
from engine.runtimes.vllm import VllmRuntime, server_env
from engine.runtimes.vllm_install import default_vllm_python
from engine.runtimes.vllm_server import VllmServer, free_port
from tests.conftest import DEFAULT_HF_ID
from tests.e2e.cli_helpers import run
from tests.e2e.rpc_client import IngotTestClient, engine

KEY = "e2e-remote-key-7f3a9c"
SERVED = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAX_MODEL_LEN = 2048
HELLO: Any = [{"role": "user", "content": "Say hello in one short sentence."}]
LONG: Any = [{"role": "user", "content": "Write a very long story about a dragon."}]

# As tests/e2e/test_vllm.py: scripts/test.sh sets INGOT_REQUIRE_VLLM, so there a missing vLLM fails.
pytestmark = pytest.mark.skipif(
    not default_vllm_python(None).exists() and not os.environ.get("INGOT_REQUIRE_VLLM"),
    reason="vLLM is not installed: run scripts/setup_vllm.sh",
)


@dataclass
class Deployment:
    server: VllmServer
    url: str


@dataclass
class Setup:
    dep: Deployment
    c: IngotTestClient
    home: Path
    rest: str

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.rest + "/v1",
            api_key="unused",
            max_retries=0,
            timeout=120,
            _strict_response_validation=True,
        )


@pytest.fixture(scope="module")
async def deployment(
    tmp_path_factory: pytest.TempPathFactory, default_model_dirs: tuple[Path, Path]
) -> AsyncIterator[Deployment]:
    """`vllm serve <default model> --api-key KEY`, with the plan and environment Ingot would use
    for the same model on this machine (the CPU build), but started by the test, not by Ingot."""
    hf_dir = default_model_dirs[0]
    scratch = tmp_path_factory.mktemp("attachF_vllm")
    variant = ModelCatalog.default().get(DEFAULT_HF_ID)
    assert variant is not None
    plan = VllmRuntime(home=scratch).plan(variant, hf_dir)
    port = free_port()
    args = [
        "--model",
        str(hf_dir),
        "--served-model-name",
        SERVED,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--disable-uvicorn-access-log",
        *plan.args(),
    ]
    args[args.index("--max-model-len") + 1] = str(MAX_MODEL_LEN)
    env = server_env(plan, scratch / "vllm-cache")
    server = VllmServer(
        str(default_vllm_python(None)),
        args,
        env=env,
        name="the e2e deployment",
        log_file=scratch / "vllm.log",
    )
    await server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await server.wait_ready(url, timeout_s=600, progress=lambda p: None, what="deployment")
        yield Deployment(server, url)
    finally:
        await server.close()


@pytest.fixture(scope="module")
async def setup(
    tmp_path_factory: pytest.TempPathFactory, deployment: Deployment
) -> AsyncIterator[Setup]:
    home = tmp_path_factory.mktemp("attachF_home") / "home"
    home.mkdir()
    client_cm = engine(home)
    c = await client_cm.__aenter__()
    try:
        ready = await c.wait_for("ingot/serviceReady")
        yield Setup(deployment, c, home, ready["url"])
    finally:
        await client_cm.__aexit__(None, None, None)


async def cli(s: Setup, *args: str, input: str | None = None) -> Any:
    return await asyncio.to_thread(run, s.home, *args, input=input, timeout=120)


async def test_attach_refuses_a_wrong_key(setup: Setup) -> None:
    proc = await cli(setup, "model", "attach", setup.dep.url, "--api-key", "wrong-key")
    assert proc.returncode != 0
    assert "refused" in proc.stderr and "401" in proc.stderr and "--api-key" in proc.stderr
    with pytest.raises(JsonRpcException) as err:
        await setup.c.request("ingot/remote/attach", {"url": setup.dep.url})
    assert err.value.code == -32010 and "no API key" in str(err.value)
    assert (await setup.c.request("ingot/remote/list"))["remotes"] == []


async def test_the_cli_attaches_it_with_the_key_from_stdin(setup: Setup) -> None:
    proc = await cli(
        setup,
        "model",
        "attach",
        setup.dep.url + "/v1/",
        "--api-key",
        "-",
        "--name",
        "cluster",
        "-o",
        "json",
        input=KEY + "\n",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["name"] == "cluster" and info["url"] == setup.dep.url and info["key"] == "stored"
    [model] = info["models"]
    assert model["id"] == "cluster:1" and model["servedModel"] == SERVED
    assert model["runtime"] == "remote" and model["device"] == "remote"
    assert model["contextLength"] == MAX_MODEL_LEN
    listed = await cli(setup, "model", "list")
    row = next(line for line in listed.stdout.splitlines() if "cluster:1" in line)
    assert " remote " in row and " remote " in row.split("cluster:1", 1)[1]


async def test_jsonrpc_lists_and_reattaches_it_and_the_key_stays_private(setup: Setup) -> None:
    listed = await setup.c.request("ingot/remote/list")
    assert [r["name"] for r in listed["remotes"]] == ["cluster"]
    again = await setup.c.request(
        "ingot/remote/attach", {"url": setup.dep.url, "apiKey": KEY, "name": "cluster"}
    )
    assert [m["id"] for m in again["models"]] == ["cluster:1"]
    info = await setup.c.request("ingot/model/info", {"model": "cluster"})
    assert info["source"] == f"remote:{setup.dep.url}" and info["sizeBytes"] == 0
    assert info["contextLength"] == MAX_MODEL_LEN and info["offered"] and info["cached"]
    keys = setup.home / "remote-keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and KEY in keys.read_text()
    for path in setup.home.rglob("*"):
        if path.is_file() and path != keys:
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in "".join(setup.c.stderr)
    engine_proc = psutil.Process((await setup.c.request("ingot/service/status"))["pid"])
    for p in [engine_proc, *engine_proc.children(recursive=True)]:
        assert KEY not in " ".join(p.cmdline())


async def test_rest_chat_through_the_openai_client(setup: Setup) -> None:
    client = setup.openai()
    r = await client.chat.completions.create(
        model="cluster", messages=HELLO, max_tokens=16, temperature=0
    )
    assert (r.choices[0].message.content or "").strip() and r.usage is not None
    stream = await client.chat.completions.create(
        model="cluster", messages=HELLO, max_tokens=16, temperature=0, stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == r.choices[0].message.content
    info = await setup.c.request("ingot/model/info", {"model": "cluster"})
    assert info["loaded"] and info["runtimeInfo"]["remote"] is True
    assert info["runtimeInfo"]["health"] == "ok"


async def test_jsonrpc_chat_streams_and_cancels_mid_stream(setup: Setup) -> None:
    c = setup.c
    res = await c.request(
        "ingot/chat",
        {"model": "cluster", "messages": HELLO, "maxTokens": 16, "partialResultToken": "rp"},
    )
    assert "".join(d["text"] for d in c.partials["rp"]) == res["text"] and res["text"].strip()
    assert res["telemetry"]["device"] == "remote"
    params = {
        "model": "cluster",
        "messages": LONG,
        "maxTokens": 1500,
        "temperature": 0,
        "partialResultToken": "rc",
    }
    fut = c.lsp.protocol.send_request("ingot/chat", params)
    deadline = time.monotonic() + 60
    while len(c.partials.get("rc", [])) < 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    msg_id = next(k for k, f in c.lsp.protocol._request_futures.items() if f is fut)
    c.lsp.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wrap_future(fut)
    assert err.value.code == -32800
    produced = len(c.partials["rc"])
    await asyncio.sleep(0.5)
    assert len(c.partials["rc"]) == produced
    history = await c.request("ingot/telemetry/history")
    assert history["requests"][-1]["finishReason"] == "cancelled"


async def test_a_killed_deployment_is_a_prompt_502_with_a_clear_message(setup: Setup) -> None:
    pid = setup.dep.server.server_pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # the whole deployment, as a crash or a lost node would
    await setup.dep.server.wait_ended(timeout_s=30)
    client = setup.openai()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        await client.chat.completions.create(model="cluster", messages=HELLO, max_tokens=8)
    assert time.monotonic() - started < 10
    assert e.value.status_code in (502, 503)
    assert setup.dep.url in e.value.message and "remote_unavailable" in str(e.value.body)
    started = time.monotonic()
    with pytest.raises(JsonRpcException) as err:
        await setup.c.request("ingot/chat", {"model": "cluster", "messages": HELLO})
    assert time.monotonic() - started < 10
    assert err.value.code == -32031 and setup.dep.url in str(err.value)
    remotes = await setup.c.request("ingot/remote/list")
    [model] = remotes["remotes"][0]["models"]
    assert model["health"] == "down" and model["healthError"]


async def test_detach_forgets_the_models_and_the_key(setup: Setup) -> None:
    listed = await cli(setup, "model", "remotes", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    [remote] = json.loads(listed.stdout)["remotes"]
    assert remote["name"] == "cluster" and remote["models"][0]["health"] == "down"
    proc = await cli(setup, "model", "detach", "cluster")
    assert proc.returncode == 0, proc.stderr
    assert "Detached cluster" in proc.stdout
    assert (await setup.c.request("ingot/remote/list"))["remotes"] == []
    with pytest.raises(JsonRpcException) as err:
        await setup.c.request("ingot/model/info", {"model": "cluster"})
    assert err.value.code == -32011
    assert KEY not in (setup.home / "remote-keys.json").read_text()
    assert (await setup.c.request("ingot/service/status"))["pid"]  # still answering
