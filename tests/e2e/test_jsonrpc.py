"""End-to-end: the real engine process over stdio with the real default model, via pytest-lsp."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from server.state import read_state
from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e.rpc_client import engine

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


async def test_initialize_advertises_methods_and_rest_url(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        ready = await c.wait_for("ingot/serviceReady")
        assert ready["url"].startswith("http://127.0.0.1:")
        status = await c.request("ingot/service/status")
        assert status["restUrl"] == ready["url"] and status["mode"] == "engine"
        st = read_state(seeded_home)
        assert st is not None and st.url == ready["url"] and st.kind == "engine"
        assert (seeded_home / "service.json").stat().st_mode & 0o777 == 0o600
        async with aiohttp.ClientSession() as http, http.get(ready["url"] + "/health") as r:
            assert r.status == 200
    assert read_state(seeded_home) is None  # cleared on shutdown


async def test_catalog_and_model_info(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        listing = await c.request("ingot/catalog/list", {"cachedOnly": True})
        ids = {m["id"] for m in listing["models"]}
        assert DEFAULT_ONNX_ID in ids
        info = await c.request("ingot/model/info", {"model": MODEL})
        assert info["id"] == DEFAULT_ONNX_ID
        assert info["cached"] and info["fits"] and info["offered"] and not info["loaded"]
        everything = await c.request("ingot/catalog/list", {"includeAll": True})
        cuda = [m for m in everything["models"] if m["device"] == "cuda"]
        assert cuda and all(not m["offered"] and "GPU" in m["fitReason"] for m in cuda)


async def test_chat_streams_partial_results_and_reports_telemetry(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        load = await c.request(
            "ingot/model/load", {"model": MODEL, "ttl": 120, "workDoneToken": "ld"}
        )
        assert load["loaded"] and load["ttlSeconds"] == 120
        kinds = [w["kind"] for w in c.work["ld"]]
        assert kinds[0] == "begin" and kinds[-1] == "end"
        res = await c.request(
            "ingot/chat",
            {
                "model": MODEL,
                "messages": HELLO,
                "maxTokens": 24,
                "temperature": 0,
                "partialResultToken": "p1",
            },
        )
        streamed = "".join(d["text"] for d in c.partials["p1"])
        assert streamed == res["text"] and res["text"].strip()
        assert res["usage"]["completionTokens"] == c.partials["p1"][-1]["tokens"]
        assert res["finishReason"] in ("stop", "length")
        t = res["telemetry"]
        assert t["ttftMs"] > 0 and t["promptTokens"] > 5 and t["modelId"].startswith("smollm2")
        states = [n["state"] for n in c.seen("ingot/model/stateChanged")]
        assert "loading" in states and "loaded" in states


async def test_cancel_stops_generation_and_reports_tokens(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        await c.request("ingot/model/load", {"model": MODEL})
        params = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
            "maxTokens": 2000,
            "temperature": 0,
            "partialResultToken": "long",
        }
        fut = c.lsp.protocol.send_request("ingot/chat", params)
        while len(c.partials.get("long", [])) < 5:
            await asyncio.sleep(0.01)
        msg_id = next(k for k, f in c.lsp.protocol._request_futures.items() if f is fut)
        c.lsp.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wrap_future(fut)
        assert err.value.code == -32800
        produced = len(c.partials["long"])
        await asyncio.sleep(0.5)
        assert len(c.partials["long"]) == produced  # nothing streamed after the cancel
        status = await c.request("ingot/service/status")
        assert status["activeRequests"] == 0
        # The engine is still healthy.
        res = await c.request("ingot/chat", {"model": MODEL, "messages": HELLO, "maxTokens": 4})
        assert res["usage"]["completionTokens"] >= 1


async def test_errors_have_codes_and_hints(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        with pytest.raises(JsonRpcException) as e:
            await c.request("ingot/model/info", {"model": "smollm2-135"})
        assert e.value.code == -32011 and "smollm2-135m" in e.value.message
        with pytest.raises(JsonRpcException) as e:
            await c.request("ingot/chat", {"model": MODEL, "messages": [], "temperature": 9})
        assert (
            e.value.code == -32602
            and "messages" in e.value.message
            and "temperature" in e.value.message
        )
        with pytest.raises(JsonRpcException) as e:
            await c.request("ingot/nope", {})
        assert e.value.code == -32601
        with pytest.raises(JsonRpcException) as e:
            await c.request("ingot/model/info", {"model": "../../etc/passwd"})
        assert e.value.code == -32010
        long_text = "word " * 9000
        with pytest.raises(JsonRpcException) as e:
            await c.request(
                "ingot/chat", {"model": MODEL, "messages": [{"role": "user", "content": long_text}]}
            )
        assert e.value.code == -32018 and "8192" in e.value.message
        # Still answering after all of that.
        assert (await c.request("ingot/service/status"))["pid"] > 0


async def test_console_session_keeps_history(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        s = await c.request(
            "ingot/console/open",
            {"model": MODEL, "system": "Be brief.", "maxTokens": 16, "temperature": 0},
        )
        sid = s["sessionId"]
        r1 = await c.request(
            "ingot/console/send",
            {"sessionId": sid, "message": "My name is Ada.", "partialResultToken": "c1"},
        )
        assert r1["session"]["tokens"] > 0 and len(r1["session"]["messages"]) == 3
        assert "".join(d["text"] for d in c.partials["c1"]) == r1["generation"]["text"]
        r2 = await c.request(
            "ingot/console/send", {"sessionId": sid, "message": "What is my name?"}
        )
        assert r2["session"]["tokens"] > r1["session"]["tokens"]
        h = await c.request("ingot/console/history", {"sessionId": sid})
        assert [m["role"] for m in h["messages"]] == [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
        ]
        reset = await c.request("ingot/console/reset", {"sessionId": sid})
        assert reset["tokens"] == 0 and len(reset["messages"]) == 1
        await c.request("ingot/console/close", {"sessionId": sid})
        with pytest.raises(JsonRpcException):
            await c.request("ingot/console/history", {"sessionId": sid})


async def test_inline_completion_and_edit(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        uri = "file:///tmp/example.py"
        text = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"
        c.lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )
        empty = await c.lsp.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=4, character=0),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
        )
        assert empty is not None and list(empty.items) == []  # nothing loaded: stays out of the way
        await c.request("ingot/model/load", {"model": MODEL})
        c.lsp.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(
                            start=types.Position(line=4, character=0),
                            end=types.Position(line=4, character=0),
                        ),
                        text="def mul(a, b):\n    ",
                    )
                ],
            )
        )
        got = await c.lsp.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=5, character=4),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
        )
        assert got is not None and len(got.items) == 1 and str(got.items[0].insert_text).strip()
        # Typing at the end of a line (issue #13): the suggestion finishes that line only, and
        # neither says the line again nor repeats the function above.
        typed = (
            'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n\n\n'
            "def fahrenheit(celsius: float) -> float:\n    return celsius * 9 / 5"
        )
        uri2 = "file:///tmp/convert.py"
        c.lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri2, language_id="python", version=1, text=typed + "\n"
                )
            )
        )
        mid = await c.lsp.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri2),
                position=types.Position(line=5, character=len("    return celsius * 9 / 5")),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
        )
        assert mid is not None and len(mid.items) == 1
        line = str(mid.items[0].insert_text)
        assert line.strip() and "\n" not in line
        assert "celsius * 9" not in line and "greet" not in line and "def " not in line
        edit = await c.request(
            "ingot/edit",
            {
                "uri": uri,
                "range": {
                    "start": {"line": 0, "character": 0},
                    "end": {"line": 1, "character": 16},
                },
                "instruction": "Rename the function add to plus.",
                "maxTokens": 40,
                "temperature": 0,
                "partialResultToken": "e1",
            },
        )
        assert edit["original"] == "def add(a, b):\n    return a + b"
        assert edit["text"].strip() and "".join(d["text"] for d in c.partials["e1"]).strip()

        # Only open documents are served (issue #14): a URI the editor never opened is not read
        # from disk (an unbounded /dev/zero would hang the engine), and a %-encoded URI of an open
        # document is that document.
        unopened = await asyncio.wait_for(
            c.lsp.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri="file:///dev/zero"),
                    position=types.Position(line=0, character=0),
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Invoked
                    ),
                )
            ),
            timeout=30,
        )
        assert unopened is not None and list(unopened.items) == []
        with pytest.raises(JsonRpcException, match="is not open"):
            await c.request(
                "ingot/edit",
                {
                    "uri": "file:///etc/hostname",
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 0, "character": 1},
                    },
                    "instruction": "Shout.",
                },
            )
        encoded = "file:///tmp/my%20notes.py"
        c.lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=encoded, language_id="python", version=1, text="x = 1\n"
                )
            )
        )
        again = await c.request(
            "ingot/edit",
            {
                "uri": encoded,
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}},
                "instruction": "Rename x to y.",
                "maxTokens": 8,
                "temperature": 0,
            },
        )
        assert again["original"] == "x = 1" and again["uri"] == encoded


async def test_telemetry_subscription(seeded_home: Path) -> None:
    async with engine(seeded_home) as c:
        await c.request("ingot/telemetry/subscribe", {"intervalMs": 200})
        sample = await c.wait_for("ingot/telemetry/sample")
        assert sample["engineRss"] > 10_000_000 and sample["ramTotal"] > 0
        await c.request("ingot/chat", {"model": MODEL, "messages": HELLO, "maxTokens": 4})
        rec = await c.wait_for("ingot/telemetry/request")
        assert rec["completionTokens"] >= 1 and rec["kind"] == "chat"
        loaded = await c.wait_for("ingot/telemetry/sample", lambda s: s["loaded"])
        assert loaded["loaded"][0]["id"].startswith("smollm2")
        hist = await c.request("ingot/telemetry/history")
        assert hist["requests"] and hist["samples"]


async def test_second_engine_on_same_home_forwards(seeded_home: Path) -> None:
    async with engine(seeded_home) as first:
        url = (await first.wait_for("ingot/serviceReady"))["url"]
        async with engine(seeded_home) as second:
            ready = await second.wait_for("ingot/serviceReady")
            assert ready["mode"] == "forwarding" and ready["url"] == url
            status = await second.request("ingot/service/status")
            assert status["mode"] == "forwarding" and status["forwardedTo"] == url
            res = await second.request(
                "ingot/chat",
                {"model": MODEL, "messages": HELLO, "maxTokens": 12, "partialResultToken": "fw"},
            )
            assert res["text"] and "".join(d["text"] for d in second.partials["fw"]) == res["text"]
            # The model was loaded once, by the owner; the forwarding engine loaded nothing.
            owner = await first.request("ingot/service/status")
            assert [m["id"] for m in owner["loaded"]] == [DEFAULT_ONNX_ID]
            assert (await second.request("ingot/service/status"))["loaded"] == []
            info = await second.request("ingot/model/info", {"model": MODEL})
            assert info["loaded"]
            with pytest.raises(JsonRpcException) as e:
                await second.request("ingot/model/info", {"model": "no-such-model"})
            assert e.value.code == -32011
        assert read_state(seeded_home) is not None  # the second one left the owner's state alone


async def test_forwarding_engine_relays_the_owners_telemetry(seeded_home: Path) -> None:
    async with engine(seeded_home) as first:
        await first.wait_for("ingot/serviceReady")
        await first.request("ingot/model/load", {"model": MODEL, "ttl": 120})
        async with engine(seeded_home) as second:
            assert (await second.wait_for("ingot/serviceReady"))["mode"] == "forwarding"
            await second.request("ingot/telemetry/subscribe", {"intervalMs": 200})
            # Nothing is loaded in the forwarding process: a sample that shows the model, with
            # the owner's memory, is the owner's.
            sample = await second.wait_for("ingot/telemetry/sample", lambda x: x["loaded"])
            assert [m["id"] for m in sample["loaded"]] == [DEFAULT_ONNX_ID]
            assert (await second.request("ingot/service/status"))["loaded"] == []
            owner = await first.request("ingot/telemetry/history")
            assert sample["at"] in {x["at"] for x in owner["samples"]}
            assert not any(not x["loaded"] for x in second.seen("ingot/telemetry/sample"))
            # A request forwarded to the owner comes back as its record.
            res = await second.request(
                "ingot/chat", {"model": MODEL, "messages": HELLO, "maxTokens": 4}
            )
            rec = await second.wait_for("ingot/telemetry/request")
            assert rec["kind"] == "chat" and rec["modelId"] == DEFAULT_ONNX_ID
            assert rec["completionTokens"] == res["usage"]["completionTokens"]
            assert rec["requestId"] in {
                r["requestId"] for r in (await first.request("ingot/telemetry/history"))["requests"]
            }
            # A model unloaded at the owner: the forwarding engine's editor hears of it too.
            await first.request("ingot/model/unload", {"model": MODEL})
            await second.wait_for(
                "ingot/model/stateChanged", lambda e: e["state"] == "unloaded", timeout=10
            )
            await second.wait_for("ingot/telemetry/sample", lambda x: not x["loaded"], timeout=10)
            hist = await second.request("ingot/telemetry/history")
            assert rec["requestId"] in {r["requestId"] for r in hist["requests"]}
