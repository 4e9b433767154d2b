"""End-to-end: the real engine over stdio for the review's findings — REST settings from the
environment, unsafe settings reported, the API key on forwarded requests, one owner per home and
takeover when it exits, quiet editor notifications, cancel and progress details, edit's default
length, and engine-side stops kept apart from client cancels."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from filelock import FileLock
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from server.state import OWNERSHIP_LOCK, read_state
from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e import rest_server
from tests.e2e.rpc_client import IngotTestClient, engine, plain
from tests.support.hf_server import HfTestServer

MODEL = "smollm2-135m"
VARIANT = DEFAULT_ONNX_ID
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
LONG = [{"role": "user", "content": "Write a very long story about a dragon."}]
NO_KEY = {"INGOT_API_KEY": ""}


def msg_id_of(c: IngotTestClient, fut: Any) -> Any:
    return next(k for k, f in c.lsp.protocol._request_futures.items() if f is fut)


async def get(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status


# -- REST settings (2), API key on forwarded requests (3) -------------------------------------------
async def test_editor_rest_port_takes_its_settings_from_the_environment(seeded_home: Path) -> None:
    env = {"INGOT_API_KEY": "sesame", "INGOT_CORS_ORIGINS": "https://app.example"}
    async with engine(seeded_home, env=env) as c:
        url = (await c.wait_for("ingot/serviceReady"))["url"]
        assert await get(url + "/ingot/v1/status") == 401
        assert await get(url + "/ingot/v1/status", {"Authorization": "Bearer sesame"}) == 200
        assert await get(url + "/health") == 200
        async with (
            aiohttp.ClientSession() as http,
            http.options(
                url + "/v1/models",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "GET",
                },
            ) as r,
        ):
            assert r.headers.get("Access-Control-Allow-Origin") == "https://app.example"


async def test_unsafe_rest_settings_are_reported_not_swallowed(seeded_home: Path) -> None:
    async with engine(seeded_home, options={"restHost": "0.0.0.0"}, env=NO_KEY) as c:
        shown = await c.wait_for(types.WINDOW_SHOW_MESSAGE)
        assert shown["type"] == types.MessageType.Error.value and "API key" in shown["message"]
        status = await c.request("ingot/service/status")
        assert status["restUrl"] is None and "API key" in status["restError"]
        assert status["mode"] == "engine" and not c.seen("ingot/serviceReady")
        assert read_state(seeded_home) is None
        # Everything but the REST port still works.
        res = await c.request("ingot/chat", {"model": MODEL, "messages": HELLO, "maxTokens": 4})
        assert res["usage"]["completionTokens"] >= 1


async def test_forwarding_to_a_keyed_service_sends_the_key(seeded_home: Path) -> None:
    with rest_server.running(seeded_home, api_key="open-sesame") as svc:
        async with engine(seeded_home, env={"INGOT_API_KEY": "open-sesame"}) as c:
            ready = await c.wait_for("ingot/serviceReady")
            assert ready["mode"] == "forwarding" and ready["url"] == svc.url
            info = await c.request("ingot/model/info", {"model": MODEL})
            assert info["id"] == VARIANT
            res = await c.request("ingot/chat", {"model": MODEL, "messages": HELLO, "maxTokens": 6})
            assert res["usage"]["completionTokens"] >= 1


# -- one owner per home (4), takeover (5) ---------------------------------------------------------
async def test_engine_claims_the_home_under_the_ownership_lock(seeded_home: Path) -> None:
    lock = FileLock(str(seeded_home / OWNERSHIP_LOCK))
    lock.acquire()
    try:
        async with engine(seeded_home) as c:
            await asyncio.sleep(3)
            assert not c.seen("ingot/serviceReady") and read_state(seeded_home) is None
            lock.release()
            ready = await c.wait_for("ingot/serviceReady")
            assert ready["mode"] == "engine"
            st = read_state(seeded_home)
            assert st is not None and st.pid == c.pid
    finally:
        if lock.is_locked:
            lock.release()


async def test_two_engines_started_together_get_one_owner(seeded_home: Path) -> None:
    async with engine(seeded_home) as a, engine(seeded_home) as b:
        ra, rb = await asyncio.gather(
            a.wait_for("ingot/serviceReady"), b.wait_for("ingot/serviceReady")
        )
        assert sorted([ra["mode"], rb["mode"]]) == ["engine", "forwarding"]
        assert ra["url"] == rb["url"]
        st = read_state(seeded_home)
        owner = a if ra["mode"] == "engine" else b
        assert st is not None and st.pid == owner.pid and st.url == ra["url"]


async def test_forwarding_engine_takes_over_when_the_owner_dies(seeded_home: Path) -> None:
    async with engine(seeded_home) as first, engine(seeded_home) as second:
        url = (await first.wait_for("ingot/serviceReady"))["url"]
        assert (await second.wait_for("ingot/serviceReady"))["mode"] == "forwarding"
        os.kill(first.pid, signal.SIGKILL)
        assert first.lsp._server is not None
        await first.lsp._server.wait()
        res = await second.request(
            "ingot/chat",
            {"model": MODEL, "messages": HELLO, "maxTokens": 8, "partialResultToken": "t"},
        )
        assert res["usage"]["completionTokens"] >= 1
        assert "".join(d["text"] for d in second.partials["t"]) == res["text"]
        ready = await second.wait_for("ingot/serviceReady", lambda n: n["mode"] == "engine")
        assert ready["url"] != url and ready["pid"] == second.pid
        status = await second.request("ingot/service/status")
        assert status["mode"] == "engine" and status.get("forwardedTo") is None
        assert [m["id"] for m in status["loaded"]] == [VARIANT]  # served here now
        st = read_state(seeded_home)
        assert st is not None and st.pid == second.pid and st.url == ready["url"]
        assert await get(ready["url"] + "/health") == 200


# -- editor notifications (6) ----------------------------------------------------------------------
async def test_did_change_for_a_document_that_is_not_open_is_ignored(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        c.lsp.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri="file:///never/opened.py", version=2
                ),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text="x = 1\n")],
            )
        )
        assert (await c.request("ingot/service/status"))["pid"] == c.pid
        await asyncio.sleep(0.3)
        assert not c.seen(types.WINDOW_SHOW_MESSAGE)
        log = c.stderr_text()
        assert re.search(r"WARNING .*didChange.*file:///never/opened.py.*not open", log), log
        assert "KeyError" not in log and "Traceback" not in log


# -- cancel in forwarding mode (7), load progress (8), download progress (9) -----------------------
async def test_cancel_while_forwarding_reports_tokens(seeded_home: Path) -> None:
    async with engine(seeded_home) as first:
        await first.wait_for("ingot/serviceReady")
        await first.request("ingot/model/load", {"model": MODEL})
        async with engine(seeded_home) as second:
            assert (await second.wait_for("ingot/serviceReady"))["mode"] == "forwarding"
            params = {"model": MODEL, "messages": LONG, "maxTokens": 2000, "temperature": 0}
            fut = second.lsp.protocol.send_request(
                "ingot/chat", {**params, "partialResultToken": "long"}
            )
            while len(second.partials.get("long", [])) < 5:
                await asyncio.sleep(0.01)
            second.lsp.protocol.notify(
                "$/cancelRequest", types.CancelParams(id=msg_id_of(second, fut))
            )
            with pytest.raises(JsonRpcException) as err:
                await asyncio.wrap_future(fut)
            assert err.value.code == -32800
            data: dict[str, Any] = plain(err.value.data)
            assert data["kind"] == "cancelled" and data["tokens"] >= 5
            assert data["tokens"] == second.partials["long"][-1]["tokens"]
            assert f"after {data['tokens']} tokens" in err.value.message
            await asyncio.sleep(0.5)
            assert (await first.request("ingot/service/status"))["activeRequests"] == 0


async def test_load_progress_ends_with_failed_or_cancelled(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        with pytest.raises(JsonRpcException) as err:
            await c.request("ingot/model/load", {"model": "qwen2.5-0.5b", "workDoneToken": "nc"})
        assert err.value.code == -32012  # not downloaded
        assert c.work["nc"][-1] == {"kind": "end", "message": "Failed"}

        fut = c.lsp.protocol.send_request(
            "ingot/model/load", {"model": MODEL, "workDoneToken": "ld"}
        )
        while not c.work.get("ld"):
            await asyncio.sleep(0.005)
        c.lsp.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id_of(c, fut)))
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wrap_future(fut)
        assert err.value.code == -32800
        assert c.work["ld"][-1] == {"kind": "end", "message": "Cancelled"}
        # The load itself went on (others may be waiting for it).
        await c.wait_for("ingot/model/stateChanged", lambda n: n["state"] == "loaded")

        assert (await c.request("ingot/model/load", {"model": MODEL, "workDoneToken": "ok"}))[
            "loaded"
        ]
        assert c.work["ok"][-1]["message"] == "Loaded"


HUB_REPO = "ingot-test/rpc-smollm2-135m-onnx"
HUB_ALIAS = "rpc-smollm2"


@pytest.fixture
def hub_env(tmp_path: Path, default_model_dirs: tuple[Path, Path]) -> Iterator[dict[str, str]]:
    """A catalog with one variant served by a local Hugging Face look-alike."""
    _, onnx = default_model_dirs
    cfg = json.loads((onnx / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    variant = {
        "name": "rpc-smollm2-cpu-int8",
        "version": 1,
        "alias": HUB_ALIAS,
        "display_name": "SmolLM2 135M (JSON-RPC test hub)",
        "publisher": "ingot-test",
        "device": "cpu",
        "framework": "onnx",
        "source": {"kind": "huggingface", "repo": HUB_REPO, "revision": "main"},
        "size_bytes": sum(p.stat().st_size for p in onnx.rglob("*") if p.is_file()),
        "context_length": int(cfg["model"]["context_length"]),
        "license": "apache-2.0",
        "kv": {
            "layers": dec["num_hidden_layers"],
            "kv_heads": dec["num_key_value_heads"],
            "head_dim": dec["head_size"],
        },
    }
    catalog = tmp_path / "rpc-test-catalog.json"
    catalog.write_text(json.dumps({"schema": 1, "variants": [variant]}), encoding="utf-8")
    with HfTestServer({HUB_REPO: onnx}) as hub:
        yield {
            "INGOT_CATALOGS": str(catalog),
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }


async def test_download_progress_states_the_byte_count_once(
    empty_home: Path, hub_env: dict[str, str]
) -> None:
    async with engine(empty_home, env=hub_env) as c:
        info = await c.request("ingot/model/download", {"model": HUB_ALIAS, "workDoneToken": "dl"})
        assert info["cached"]
        reports = [w["message"] for w in c.work["dl"] if w["kind"] == "report" and w.get("message")]
        assert reports
        for message in reports:
            counts = re.findall(r"\d+(?:\.\d+)? (?:B|KB|MB|GB)\b", message)
            assert len(counts) <= 2, message  # "x of y", not "x of y (x / y)"
        assert c.work["dl"][-1] == {"kind": "end", "message": "Downloaded"}


# -- edit's default length (10) --------------------------------------------------------------------
async def test_edit_without_max_tokens_stays_near_the_selection_length(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        uri = "file:///tmp/short.py"
        c.lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text="x = 1\n"
                )
            )
        )
        edit = await c.request(
            "ingot/edit",
            {
                "uri": uri,
                "model": MODEL,
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}},
                "instruction": "Replace this with a 2000-word essay about the history of the sea.",
                "temperature": 0,
            },
        )
        assert edit["original"] == "x = 1"
        gen = edit["generation"]
        # "x = 1" is a handful of tokens: 2 x that + 64 is well under 100, not 2048.
        assert gen["usage"]["completionTokens"] <= 100, gen["usage"]
        assert gen["finishReason"] == "length"


# -- engine-side stops are not client cancels (11) -------------------------------------------------
async def test_forced_unload_stops_a_generation_with_an_engine_error(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        await c.request("ingot/model/load", {"model": MODEL})
        fut = c.lsp.protocol.send_request(
            "ingot/chat",
            {
                "model": MODEL,
                "messages": LONG,
                "maxTokens": 2000,
                "temperature": 0,
                "partialResultToken": "s",
            },
        )
        while len(c.partials.get("s", [])) < 3:
            await asyncio.sleep(0.01)
        assert (await c.request("ingot/model/unload", {"model": MODEL, "force": True}))["unloaded"]
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wrap_future(fut)
        data: dict[str, Any] = plain(err.value.data)
        assert err.value.code == -32029 and err.value.code != -32800
        assert data["kind"] == "cancelled" and data["reason"] == "unloaded"
        assert data["tokens"] >= 3
