"""End-to-end: the standalone REST service with the real default model, driven by the official
`openai` client with strict response validation (and raw HTTP where the wire itself is checked)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from engine.runtimes.onnx_session import FLUSH_S
from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e.rest_server import RestServer, copy_home, read_sse, running

MODEL = "smollm2-135m"
VARIANT = DEFAULT_ONNX_ID
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("rest-openai") / "home")
    with running(home) as s:
        yield s


async def _stream(
    server: RestServer, path: str, body: dict[str, Any]
) -> list[dict[str, Any] | str]:
    """The data payloads of a streamed answer, decoded ("[DONE]" kept as text)."""
    out: list[dict[str, Any] | str] = []
    async with aiohttp.ClientSession() as http, http.post(server.url + path, json=body) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for _, data in read_sse(r):
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def _idle_within(server: RestServer, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers=server.ingot_auth()) as http:
        while True:
            async with http.get(server.url + "/ingot/v1/status") as r:
                st = await r.json()
            if st["activeRequests"] == 0 and st["queuedRequests"] == 0:
                return st
            assert time.monotonic() < deadline, f"still busy after {seconds}s: {st}"
            await asyncio.sleep(0.02)


def _last_request(server: RestServer) -> dict[str, Any]:
    history = server.get_json("/ingot/v1/telemetry/history")
    return history["requests"][-1]


def test_models_list_and_retrieve(server: RestServer) -> None:
    client = server.client()
    ids = [m.id for m in client.models.list().data]
    assert VARIANT in ids
    assert client.models.retrieve(MODEL).id == VARIANT  # an alias resolves to the variant
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("smollm2-135")
    body: Any = e.value.body
    assert body["code"] == "model_not_found"
    assert "smollm2-135m" in body["message"]
    assert "smollm2-135m" in body["ingot"]["suggestions"]


def test_chat_non_streaming_shape(server: RestServer) -> None:
    r = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        max_tokens=12,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.message.content
    assert choice.message.refusal is None
    assert choice.finish_reason in ("stop", "length")
    assert r.model == VARIANT
    assert r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 12
    assert r.system_fingerprint
    assert r.system_fingerprint.startswith("ingot-")
    timings = (r.model_extra or {})["ingot"]["timings"]
    assert timings["ttftMs"] > 0
    assert timings["completionTokens"] == r.usage.completion_tokens


async def test_chat_streaming_wire_shape(server: RestServer) -> None:
    body = {
        "model": MODEL,
        "messages": HELLO,
        "max_tokens": 10,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = await _stream(server, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] > 0
    assert usage["ingot"]["timings"]["requestId"]
    assert len({c["id"] for c in chunks}) == 1


async def test_chat_streaming_with_the_sdk(server: RestServer) -> None:
    client = server.async_client()
    stream = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=10, stream=True, temperature=0
    )
    text, reasons = "", []
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reasons.append(chunk.choices[0].finish_reason)
    plain = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=10, temperature=0
    )
    assert text == plain.choices[0].message.content  # greedy: the same tokens either way
    assert [x for x in reasons if x] == [plain.choices[0].finish_reason]


def test_stop_sequence_and_seed(server: RestServer) -> None:
    client = server.client()
    free = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, temperature=0)
    text = free.choices[0].message.content or ""
    word = text.split()[1] if len(text.split()) > 1 else text[1:3]
    stopped = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=16, temperature=0, stop=[word]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in (stopped.choices[0].message.content or "")
    runs = [
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=12, temperature=1.0, seed=2**40 + 7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def _check_weather_call(call: Any) -> None:
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"}
    assert isinstance(args["city"], str)
    assert args["unit"] in ("c", "f")


def test_forced_tool_call(server: RestServer) -> None:
    r = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls
    assert len(choice.message.tool_calls) == 1
    _check_weather_call(choice.message.tool_calls[0])


async def test_required_tool_call_streamed(server: RestServer) -> None:
    stream = await server.async_client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Oslo, in celsius?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=48,
        stream=True,
    )
    calls, reasons, content = [], [], ""
    async for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        calls += delta.tool_calls or []
        reasons.append(chunk.choices[0].finish_reason)
    assert [x for x in reasons if x] == ["tool_calls"]
    assert content == ""
    assert len(calls) == 1
    assert calls[0].index == 0
    assert calls[0].function
    assert calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments or "")
    assert set(args) == {"city", "unit"}


def test_json_schema_and_json_object(server: RestServer) -> None:
    client = server.client()
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person called Ada who is 36."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
        max_tokens=40,
    )
    data = json.loads(r.choices[0].message.content or "")
    assert set(data) == {"name", "age"}
    assert isinstance(data["age"], int)
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a colour."}],
        response_format={"type": "json_object"},
        max_tokens=24,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    else:
        assert (r.choices[0].message.content or "").lstrip().startswith("{")


def test_regex_response_format_extension(server: RestServer) -> None:
    r = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is Paris in France? Answer yes or no."}],
        response_format={"type": "regex", "regex": "(yes|no)"},  # type: ignore[arg-type, misc]
        max_tokens=8,
        temperature=0,
    )
    assert r.choices[0].message.content in ("yes", "no")
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(
            model=MODEL,
            messages=HELLO,
            response_format={"type": "regex"},  # type: ignore[arg-type, misc]
        )
    assert e.value.status_code == 400 and "regex" in str(e.value.message)


async def test_completions_with_suffix_and_streaming(server: RestServer) -> None:
    r = server.client().completions.create(
        model=MODEL,
        prompt="def add(a, b):\n    return ",
        suffix="\n\nprint(add(1, 2))\n",
        max_tokens=12,
        temperature=0,
    )
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage
    events = await _stream(
        server,
        "/v1/completions",
        {"model": MODEL, "prompt": COUNTING, "max_tokens": 8, "stream": True},
    )
    chunks = [e for e in events if isinstance(e, dict)]
    assert events[-1] == "[DONE]"
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ] == ["length"]
    assert "".join(c["choices"][0]["text"] for c in chunks).strip()


def test_context_length_errors(server: RestServer) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello " * 9000}], max_tokens=8
        )
    body: Any = e.value.body
    assert body["code"] == "context_length_exceeded"
    assert body["param"] == "messages"
    assert "8192" in body["message"]
    assert str(body["ingot"]["prompt_tokens"]) in body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8190)
    body = e.value.body
    assert body["code"] == "context_length_exceeded"
    assert body["param"] == "max_tokens"


async def test_disconnect_mid_stream_stops_generation(server: RestServer) -> None:
    body = {
        "model": MODEL,
        "prompt": COUNTING,
        "max_tokens": 2000,
        "stream": True,
        "temperature": 0,
    }
    chunks: list[str] = []
    async with aiohttp.ClientSession() as http:
        r = await http.post(server.url + "/v1/completions", json=body)
        async for _, data in read_sse(r):
            if data != "[DONE]":
                chunks.append(json.loads(data)["choices"][0]["text"])
            if len(chunks) == 3:
                break
        r.close()  # hang up mid-stream
        await _idle_within(server, 0.5)
        count = await http.post(
            server.url + "/v1/chat/completions/tokenizer/encode/count",
            json={"model": MODEL, "prompt": "".join(chunks)},
        )
        seen = int((await count.json())["tokenCount"])
    rec = _last_request(server)
    assert rec["finishReason"] == "cancelled"
    # Stopped within a token or two of the hang-up. A chunk carries the tokens of up to FLUSH_S,
    # so the worker may have held that many more, decoded but not yet sent, when it came.
    rates = [r["decodeTps"] for r in server.get_json("/ingot/v1/telemetry/history")["requests"]]
    held = math.ceil(FLUSH_S * max((r for r in rates if r), default=200.0))
    assert seen - 1 <= rec["completionTokens"] <= seen + held + 3, (seen, held, rec)


async def test_disconnect_mid_non_streamed_request(server: RestServer) -> None:
    body = {"model": MODEL, "prompt": COUNTING, "max_tokens": 2000, "temperature": 0}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await http.post(server.url + "/v1/completions", json=body)
    await _idle_within(server, 0.5)
    rec = _last_request(server)
    assert rec["finishReason"] == "cancelled", rec
    assert rec["completionTokens"] < 400, rec


async def test_eight_concurrent_streams_all_complete(server: RestServer) -> None:
    client = server.async_client()

    async def one(i: int) -> tuple[str, list[str]]:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": f"Name an animal whose name starts with {'ABCDEFGH'[i]}.",
                }
            ],
            max_tokens=12,
            stream=True,
        )
        text, reasons = "", []
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                reasons.append(chunk.choices[0].finish_reason)
        return text, reasons

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(text and len(reasons) == 1 for text, reasons in results)
    await _idle_within(server, 2.0)
