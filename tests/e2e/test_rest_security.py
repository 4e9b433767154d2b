"""End-to-end: what the REST service refuses, and how. API key, Host and Origin checks, body and
max_tokens limits, model-name validation, a full queue, and a matrix of bad input that must never
produce a 500, a traceback or a dead server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.rest_server import RestServer, copy_home, running, spawn

KEY = "sk-test-0123456789"
MODEL = "smollm2-135m"
ALLOWED_ORIGIN = "https://allowed.example"
HELLO = [{"role": "user", "content": "Say hello."}]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("rest-security") / "home")
    env = {"INGOT_MAX_BODY_BYTES": "65536", "INGOT_MAX_TOKENS_LIMIT": "4096"}
    args = ("--queue-limit", "1", "--cors-origin", ALLOWED_ORIGIN)
    with running(home, *args, api_key=KEY, env=env) as s:
        yield s


@pytest.fixture
async def http(server: RestServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url, headers=server.auth()) as session:
        yield session


def _error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str)
    assert err["message"]
    assert "Traceback" not in err["message"]
    return dict(err)


def test_api_key_is_required(server: RestServer) -> None:
    client = openai.OpenAI(
        base_url=server.url + "/v1",
        api_key="sk-wrong",
        max_retries=0,
        _strict_response_validation=True,
    )
    with pytest.raises(openai.AuthenticationError) as e:
        client.models.list()
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    assert server.client().models.list().data


async def test_health_is_open_and_the_rest_is_not(server: RestServer) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as anon:
        async with anon.get("/health") as r:
            assert r.status == 200
        for path in ("/metrics", "/openai/status", "/ingot/v1/status", "/foundry/list"):
            async with anon.get(path) as r:
                assert r.status == 401, path
                _error(await r.json())


async def test_host_header_must_be_loopback(
    server: RestServer, http: aiohttp.ClientSession
) -> None:
    port = server.url.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "attacker.test", f"192.0.2.1:{port}"):
        async with http.get("/v1/models", headers={"Host": host}) as r:
            assert r.status == 403, host
            assert _error(await r.json())["code"] == "host_not_allowed"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        async with http.get("/v1/models", headers={"Host": host}) as r:
            assert r.status == 200, host


async def test_cors_only_for_configured_origins(
    server: RestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get("/v1/models", headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 403
        assert _error(await r.json())["code"] == "origin_not_allowed"
    async with http.get("/v1/models", headers={"Origin": ALLOWED_ORIGIN}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    preflight = {
        "Origin": ALLOWED_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with aiohttp.ClientSession(base_url=server.url) as anon:
        async with anon.options(CHAT, headers=preflight) as r:
            assert r.status == 204
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "authorization" in r.headers["Access-Control-Allow-Headers"]
        async with anon.get("/v1/models") as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_body_size_limit(http: aiohttp.ClientSession) -> None:
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 70_000}]})
    async with http.post(CHAT, data=big, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        assert _error(await r.json())["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    # No Content-Length: caught while reading.
    async with http.post(CHAT, data=chunked(), headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        _error(await r.json())


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 4, **fields}).encode()


def _raw(extra: bytes) -> bytes:
    """A chat body with raw JSON text (numbers Python's json would not write) appended."""
    return json.dumps({"model": MODEL, "messages": HELLO}).encode()[:-1] + b", " + extra + b"}"


BAD_CHAT: list[tuple[str, bytes]] = [
    ("malformed", b'{"model": '),
    ("not an object", b"[1, 2]"),
    ("empty", b""),
    ("invalid utf-8", b'{"model": "\xff\xfe"}'),
    (
        "lone surrogate",
        b'{"model":"smollm2-135m","messages":[{"role":"user","content":"\\ud800"}]}',
    ),
    ("surrogate in a key", b'{"model":"smollm2-135m","messages":[],"\\udfff":1}'),
    ("huge float", _raw(b'"max_tokens": 1e400')),
    ("huge int", _raw(b'"max_tokens": ' + b"9" * 5000)),
    ("int64 overflow", _chat(max_tokens=10**30)),
    ("NaN", _raw(b'"temperature": NaN')),
    ("Infinity", _raw(b'"top_p": Infinity')),
    ("deep nesting", b'{"model": "m", "messages": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
    ("nesting over the limit", b'{"model": "m", "messages": ' + b"[" * 80 + b"]" * 80 + b"}"),
    ("messages a string", _chat(messages="hi")),
    ("messages empty", _chat(messages=[])),
    ("unknown role", _chat(messages=[{"role": "wizard", "content": "hi"}])),
    ("content an object", _chat(messages=[{"role": "user", "content": {"a": 1}}])),
    (
        "image part",
        _chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ),
    ),
    ("max_tokens a string", _chat(max_tokens="10")),
    ("max_tokens negative", _chat(max_tokens=-5)),
    ("max_tokens over the limit", _chat(max_tokens=5000)),
    ("temperature a word", _chat(temperature="hot")),
    ("top_p too big", _chat(top_p=2)),
    ("seed a float", _chat(seed=1.5)),
    ("stream a string", _chat(stream="yes")),
    ("stop a number", _chat(stop=5)),
    ("too many stops", _chat(stop=["a"] * 40)),
    ("model a number", _chat(model=5)),
    ("model path traversal", _chat(model="../../etc/passwd")),
    ("model with NUL", _chat(model="smoll\u0000m")),
    ("tools an object", _chat(tools={"type": "function"})),
    ("tool with a bad name", _chat(tools=[{"type": "function", "function": {"name": "a b"}}])),
    ("tool_choice unknown", _chat(tool_choice="maybe")),
    ("tool_choice without tools", _chat(tool_choice="required")),
    (
        "tool_choice names a missing tool",
        _chat(
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice={"type": "function", "function": {"name": "g"}},
        ),
    ),
    ("response_format unknown", _chat(response_format={"type": "xml"})),
    (
        "json_schema without schema",
        _chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
    ),
    (
        "tool schema the runtime rejects",
        _chat(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "x"}}}],
            tool_choice="required",
        ),
    ),
    (
        "schema with a dangling $ref",
        _chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"properties": {"a": {"$ref": "#/no"}}}},
            }
        ),
    ),
    ("keep_alive nonsense", _chat(keep_alive="forever")),
    ("n > 1", _chat(n=2)),
    ("logprobs", _chat(logprobs=True, top_logprobs=2)),
    ("audio", _chat(audio={"voice": "alloy", "format": "wav"}, modalities=["text", "audio"])),
    ("unknown field", _chat(mirostat=2)),
    ("functions (deprecated)", _chat(functions=[{"name": "f"}])),
    ("both max_tokens fields", _chat(max_tokens=5, max_completion_tokens=6)),
]


@pytest.mark.parametrize(("case", "body"), BAD_CHAT, ids=[c for c, _ in BAD_CHAT])
async def test_bad_chat_input_is_a_clean_400(
    http: aiohttp.ClientSession, case: str, body: bytes
) -> None:
    async with http.post(CHAT, data=body, headers={"Content-Type": "application/json"}) as r:
        err = _error(await r.json())
        assert r.status == 400, (case, err)
        assert err["type"] == "invalid_request_error"


BAD_OTHER: list[tuple[str, str, str, Any, int | tuple[int, ...]]] = [
    ("POST", "/v1/completions", "prompt tokens", {"model": MODEL, "prompt": [1, 2, 3]}, 400),
    ("POST", "/v1/completions", "two prompts", {"model": MODEL, "prompt": ["a", "b"]}, 400),
    ("POST", "/v1/completions", "echo", {"model": MODEL, "prompt": "a", "echo": True}, 400),
    ("POST", "/v1/completions", "best_of", {"model": MODEL, "prompt": "a", "best_of": 3}, 400),
    ("POST", "/v1/completions", "no prompt", {"model": MODEL}, 400),
    (
        "POST",
        "/v1/chat/completions/tokenizer/encode/count",
        "nothing to count",
        {"model": MODEL},
        400,
    ),
    ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", "traversal in the path", None, (400, 404)),
    ("GET", "/ingot/v1/models/%2E%2E", "dot-dot model", None, (400, 404)),
    ("DELETE", "/ingot/v1/models/..%5Ccache", "backslash model", None, 400),
    ("GET", "/openai/load/smollm2-135m?ttl=abc", "ttl not a number", None, 400),
    ("GET", "/openai/load/smollm2-135m?ep=npu", "unknown ep", None, 400),
    ("GET", "/ingot/v1/catalog?cachedOnly=maybe", "bad flag", None, 400),
    ("POST", "/ingot/v1/models/smollm2-135m/load", "ttl a string", {"ttl": "abc"}, 400),
    ("POST", "/ingot/v1/cache/move", "no path", {}, 400),
    ("GET", "/v1/models/no-such-model", "unknown model", None, 404),
    ("GET", "/no/such/route", "unknown route", None, 404),
    ("PUT", "/v1/models", "wrong method", None, 405),
]


@pytest.mark.parametrize(
    ("method", "path", "case", "body", "status"), BAD_OTHER, ids=[c[2] for c in BAD_OTHER]
)
async def test_bad_input_elsewhere(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    case: str,
    body: Any,
    status: int | tuple[int, ...],
) -> None:
    async with http.request(method, path, json=body) as r:
        err = _error(await r.json())
        assert r.status in (status if isinstance(status, tuple) else (status,)), (case, err)


def test_unsupported_parameters_are_named(server: RestServer) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, n=3)
    assert e.value.param == "n"
    assert e.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_body={"min_p": 0.05})
    assert "min_p" in str(e.value.message)
    r = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=4,
        user="u1",
        presence_penalty=0,
        extra_body={"keep_alive": "5m", "top_k": 40, "store": False},
    )
    assert r.choices[0].message.content is not None


async def test_server_survives_and_answers_after_bad_input(server: RestServer) -> None:
    r = server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert r.choices[0].message.content is not None
    assert server.proc.poll() is None


async def test_full_queue_is_503_with_retry_after(
    server: RestServer, http: aiohttp.ClientSession
) -> None:
    long = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 2000}
    posts: list[asyncio.Task[aiohttp.ClientResponse]] = []

    async def status() -> tuple[int, int]:
        async with http.get("/ingot/v1/status") as r:
            data = await r.json()
            return data["activeRequests"], data["queuedRequests"]

    async def until(ok: Callable[[int, int], bool]) -> tuple[int, int]:
        for _ in range(1500):
            active, queued = await status()
            if ok(active, queued):
                return active, queued
            await asyncio.sleep(0.02)
        raise AssertionError(f"the model never got there: active {active}, queued {queued}")

    # Loaded first (requests that arrive during a load wait for it, not in the model's queue),
    # and idle: earlier tests on this server may still be winding down.
    async with http.post(f"/ingot/v1/models/{MODEL}/load", json={}) as r:
        assert r.status == 200, await r.text()
        slots = int((await r.json())["runtimeInfo"]["concurrency"])
    await until(lambda active, queued: active == 0 and queued == 0)
    try:
        # Fill every slot the model runs at once, then its queue (--queue-limit 1).
        for _ in range(slots):
            posts.append(asyncio.create_task(http.post("/v1/completions", json=long)))
        await until(lambda active, queued: active >= slots)
        posts.append(asyncio.create_task(http.post("/v1/completions", json=long)))
        _, queued = await until(lambda active, queued: queued >= 1)
        assert queued == 1
        with pytest.raises(openai.InternalServerError) as e:
            server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        assert e.value.status_code == 503
        assert e.value.code == "engine_busy"
        assert int(e.value.response.headers["Retry-After"]) >= 1
    finally:
        for post in posts:
            post.cancel()
        for post in posts:
            with contextlib.suppress(asyncio.CancelledError):
                await post


async def test_non_loopback_bind_needs_a_key(tmp_path: Path) -> None:
    proc, log, _ = spawn(tmp_path / "home", "--host", "0.0.0.0")
    assert await asyncio.to_thread(proc.wait, 60) == 2
    assert "API key" in log.read_text()
