"""End-to-end: user errors that used to answer 500 (or aiohttp's plain text) are 4xx in the OpenAI
error shape that say what to change, and web pages cannot drive state-changing routes (CSRF),
against the real REST server with the real default model."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.rest_server import RestServer, copy_home, running

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hello."}]
ALLOWED_ORIGIN = "https://allowed.example"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("rest-hardening") / "home")
    with running(home, "--cors-origin", ALLOWED_ORIGIN) as s:
        yield s


@pytest.fixture
async def http(server: RestServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url, headers=server.ingot_auth()) as session:
        yield session


def _error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert "Traceback" not in err["message"] and "Internal error" not in err["message"], err
    return dict(err)


async def _refused(r: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    body = await r.json()
    assert r.status == status, (r.status, body)
    return _error(body)


async def _loaded(http: aiohttp.ClientSession) -> list[str]:
    async with http.get("/openai/loadedmodels") as r:
        assert r.status == 200
        return list(await r.json())


async def _load(http: aiohttp.ClientSession) -> None:
    async with http.get(f"/openai/load/{MODEL}") as r:
        assert r.status == 200, await r.text()
    assert await _loaded(http)


# -- empty prompts --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt", ["", "\x00", "\x00" * 8, [""]], ids=["empty", "nul", "nuls", "list"]
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_an_empty_prompt_is_a_400_naming_the_prompt(
    http: aiohttp.ClientSession, prompt: Any, stream: bool
) -> None:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "stream": stream}
    async with http.post("/v1/completions", json=body) as r:
        err = await _refused(r, 400)
    assert err["param"] == "prompt" and "prompt is empty" in err["message"], err


# -- response_format constraints the runtime refuses -----------------------------------------------
BAD_FORMATS = [
    ({"type": "regex", "regex": "a{1000000}"}, "regex"),
    ({"type": "regex", "regex": "(ab"}, "regex"),
    ({"type": "grammar", "grammar": "start: foo"}, "Lark grammar"),
    ({"type": "grammar", "grammar": 'start: "a" | %%% bad'}, "Lark grammar"),
]


@pytest.mark.parametrize(
    ("fmt", "what"), BAD_FORMATS, ids=[f[0][f[0]["type"]] for f in BAD_FORMATS]
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_bad_regex_or_grammar_is_a_400_naming_response_format(
    http: aiohttp.ClientSession, fmt: dict[str, str], what: str, stream: bool
) -> None:
    body = {
        "model": MODEL,
        "messages": HELLO,
        "max_tokens": 4,
        "response_format": fmt,
        "stream": stream,
    }
    async with http.post("/v1/chat/completions", json=body) as r:
        err = await _refused(r, 400)
    assert err["param"] == "response_format", err
    assert what in err["message"] and "<state>" not in err["message"], err
    assert err["code"] == "invalid_request" and err["ingot"]["code"] == -32010, err


async def test_a_unicode_class_regex_is_never_a_server_error(http: aiohttp.ClientSession) -> None:
    fmt = {"type": "regex", "regex": r"\p{Greek}+"}
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "response_format": fmt}
    async with http.post("/v1/chat/completions", json=body) as r:
        assert r.status < 500, await r.text()


# -- cache move: validated before anything is unloaded --------------------------------------------
@pytest.mark.parametrize(
    "dest",
    [
        "/",
        "/etc",
        "/proc",
        "/proc/self",
        "/sys/kernel",
        "/usr",
        "/tmp",
        "relative/dir",
        "/tmp/a\x00b",
    ],
)
async def test_cache_move_to_a_folder_that_cannot_hold_it_is_a_400_and_unloads_nothing(
    http: aiohttp.ClientSession, dest: str
) -> None:
    await _load(http)
    async with http.post("/ingot/v1/cache/move", json={"path": dest}) as r:
        err = await _refused(r, 400)
    assert err["param"] == "path", err
    assert await _loaded(http), "a refused move must not unload anything"


async def test_cache_move_to_a_file_or_a_full_folder_is_a_400(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    for dest, says in ((tmp_path / "a-file", "is a file"), (tmp_path / "full", "not empty")):
        async with http.post("/ingot/v1/cache/move", json={"path": str(dest)}) as r:
            err = await _refused(r, 400)
        assert err["param"] == "path" and says in err["message"], err


async def test_cache_move_to_where_the_cache_is_changes_and_unloads_nothing(
    http: aiohttp.ClientSession,
) -> None:
    await _load(http)
    async with http.get("/ingot/v1/cache") as r:
        assert r.status == 200
        before = await r.json()
    for dest in (before["path"], before["path"] + "/", before["path"] + "/models/.."):
        async with http.post("/ingot/v1/cache/move", json={"path": dest}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["path"] == before["path"]
    assert await _loaded(http), "a move to the same folder must not unload anything"


# -- register --------------------------------------------------------------------------------------
def _unreadable_folder(tmp_path: Path) -> Path | None:
    """A folder this user cannot list: a mode-000 one (not for root), or /proc/1/map_files
    (needs CAP_SYS_ADMIN, which a container's root usually lacks)."""
    mine = tmp_path / "unreadable"
    mine.mkdir()
    mine.chmod(0)
    for candidate in (mine, Path("/proc/1/map_files")):
        try:
            os.listdir(candidate)
        except PermissionError:
            return candidate
        except OSError:
            continue
    return None


async def test_registering_a_folder_that_cannot_be_read_is_a_400(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    for path in ("/tmp/a\x00b",):
        async with http.post("/ingot/v1/models/register", json={"path": path}) as r:
            err = await _refused(r, 400)
        assert err["param"] == "path", err
    folder = _unreadable_folder(tmp_path)
    try:
        if folder is None:
            pytest.skip("no folder here is unreadable for this user")
        async with http.post("/ingot/v1/models/register", json={"path": str(folder)}) as r:
            err = await _refused(r, 400)
        assert err["param"] == "path" and "cannot be read" in err["message"], err
    finally:
        (tmp_path / "unreadable").chmod(0o700)


# -- malformed HTTP --------------------------------------------------------------------------------
async def _raw(server: RestServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.rsplit("/", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"x" * 20_000 + b"\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
    ],
    ids=["no-host", "long-header", "bad-header"],
)
async def test_malformed_http_gets_the_json_error_shape(
    server: RestServer, request_bytes: bytes
) -> None:
    status, headers, body = await _raw(server, request_bytes)
    assert status == 400, body
    assert headers["content-type"].startswith("application/json"), headers
    err = _error(json.loads(body))
    assert err["code"] == "bad_http_request", err


# -- cross-site requests ---------------------------------------------------------------------------
STATE_GETS = [
    f"/openai/load/{MODEL}",
    f"/openai/unload/{MODEL}",
    "/openai/unloadall",
    f"/models/load/{MODEL}",
    f"/models/unload/{MODEL}",
]
BROWSER = {
    "cross-site img": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    "same-site img": {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},
    "cross-site link": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
    "same-site fetch": {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
    "no-cors from the same origin": {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors"},
}


@pytest.mark.parametrize("path", STATE_GETS)
@pytest.mark.parametrize("headers", list(BROWSER.values()), ids=list(BROWSER))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_state_changing_gets_refuse_web_pages(
    http: aiohttp.ClientSession, path: str, headers: dict[str, str], method: str
) -> None:
    await _load(http)
    async with http.request(method, path, headers=headers) as r:
        assert r.status == 403, path
        if method == "GET":
            err = _error(await r.json())
            assert err["code"] == "cross_site_request" and "refused" in err["message"], err
    assert await _loaded(http), "a refused request must not unload the model"


STATE_POSTS = [
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 2}),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 2}),
    ("POST", f"/ingot/v1/models/{MODEL}/unload", {"force": True}),
    ("POST", f"/ingot/v1/models/{MODEL}/load", {}),
    ("POST", "/ingot/v1/cache/move", {"path": "relative/never"}),
    ("POST", "/openai/download", {"model": {"Name": MODEL}}),
    ("DELETE", f"/ingot/v1/models/{MODEL}", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), STATE_POSTS, ids=[f"{m} {p}" for m, p, _ in STATE_POSTS]
)
async def test_state_changing_posts_refuse_web_pages(
    http: aiohttp.ClientSession, method: str, path: str, body: Any
) -> None:
    await _load(http)
    for headers in (*BROWSER.values(), {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}):
        async with http.request(method, path, json=body, headers=headers) as r:
            err = await _refused(r, 403)
        assert err["code"] == "cross_site_request", err
    assert await _loaded(http)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
@pytest.mark.parametrize(
    ("method", "path", "body"), STATE_POSTS[:-1], ids=[f"{m} {p}" for m, p, _ in STATE_POSTS[:-1]]
)
async def test_state_changing_bodies_must_be_json(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, content_type: str | None
) -> None:
    await _load(http)
    data = json.dumps(body).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    # aiohttp adds application/octet-stream to bytes without a type: a body of unknown type.
    async with http.request(method, path, data=data, headers=headers) as r:
        err = await _refused(r, 415)
    assert err["code"] == "unsupported_media_type" and "application/json" in err["message"], err
    assert await _loaded(http)


async def test_an_allowed_origin_may_call_cross_site_with_cors(
    http: aiohttp.ClientSession,
) -> None:
    await _load(http)
    cors = {"Origin": ALLOWED_ORIGIN, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
    async with http.post(f"/ingot/v1/models/{MODEL}/unload", json={}, headers=cors) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    async with http.get(f"/openai/load/{MODEL}", headers=cors) as r:
        assert r.status == 200, await r.text()
    # An allowed origin still cannot use a no-cors request (an image, a form) to change state.
    img = {"Origin": ALLOWED_ORIGIN, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    async with http.get("/openai/unloadall", headers=img) as r:
        assert r.status == 403
    evil = {
        "Origin": "https://evil.example",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "cors",
    }
    async with http.post(f"/ingot/v1/models/{MODEL}/unload", json={}, headers=evil) as r:
        assert r.status == 403
    assert await _loaded(http)


@pytest.mark.parametrize("path", STATE_GETS[:2])
async def test_a_page_of_another_site_named_only_in_referer_is_refused(
    server: RestServer, http: aiohttp.ClientSession, path: str
) -> None:
    # Older Safari sends no Sec-Fetch-*, and an <img src> no Origin: only Referer tells.
    await _load(http)
    async with http.get(path, headers={"Referer": "https://evil.example/page"}) as r:
        err = await _refused(r, 403)
    assert err["code"] == "cross_site_request" and "evil.example" in err["message"], err
    assert await _loaded(http), "a refused request must not unload the model"
    # The server's own pages (on a loopback name, this port) and allowed origins may.
    port = server.url.rsplit(":", 1)[1].rstrip("/")
    for page in (f"http://localhost:{port}/docs", f"{ALLOWED_ORIGIN}/app"):
        async with http.get(f"/openai/load/{MODEL}", headers={"Referer": page}) as r:
            assert r.status == 200, (page, await r.text())
    for other in (f"http://localhost:{int(port) + 1}/", "not a url", "https://u@evil.example/"):
        async with http.get("/openai/unloadall", headers={"Referer": other}) as r:
            assert r.status == 403, other
    assert await _loaded(http)


async def test_local_tools_and_the_users_own_browser_tab_keep_working(
    server: RestServer, http: aiohttp.ClientSession
) -> None:
    # curl-like: no Sec-Fetch-*, no Origin, no Referer, including a bare POST without a body.
    async with http.get(f"/openai/load/{MODEL}?ttl=600") as r:
        assert r.status == 200
    async with http.post(f"/ingot/v1/models/{MODEL}/unload") as r:
        assert r.status == 200, await r.text()
    async with http.post(f"/ingot/v1/models/{MODEL}/load", json={}, headers=JSON) as r:
        assert r.status == 200, await r.text()
    # The user typing the URL into the address bar (Sec-Fetch-Site: none) or a same-origin page.
    for site in ("none", "same-origin"):
        nav = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"}
        async with http.get(f"/openai/load/{MODEL}", headers=nav) as r:
            assert r.status == 200, site
    # A cross-site page may still read-only GET (it cannot read the answer without CORS anyway).
    async with http.get("/v1/models", headers=BROWSER["cross-site img"]) as r:
        assert r.status == 200
    # The openai SDK sends JSON with no browser headers.
    reply = server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    assert reply.choices[0].message.content is not None
    assert await _loaded(http)


# -- the same caps on every generation route ------------------------------------------------------
NATIVE_CHAT = {"model": MODEL, "messages": HELLO, "maxTokens": 2}
OVER_THE_CAPS = [
    ("/ingot/v1/chat", {**NATIVE_CHAT, "maxTokens": 1_000_000}, "max_tokens"),
    ("/ingot/v1/complete", {"model": MODEL, "prompt": "Hi", "maxTokens": 999_999}, "max_tokens"),
    ("/ingot/v1/chat", {**NATIVE_CHAT, "messages": HELLO * 5000}, "messages"),
    ("/ingot/v1/chat", {**NATIVE_CHAT, "stop": ["x" * 2000]}, "stop[0]"),
    ("/ingot/v1/complete", {"model": MODEL, "prompt": "Hi", "stop": ["y" * 1001]}, "stop[0]"),
    ("/ingot/v1/chat", {**NATIVE_CHAT, "kind": "k" * 10_000}, "kind"),
    ("/ingot/v1/complete", {"model": MODEL, "prompt": "Hi", "kind": "mine"}, "kind"),
    ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "stop": "s" * (1 << 20)}, "stop"),
    ("/v1/completions", {"model": MODEL, "prompt": "Hi", "stop": "s" * 1001}, "stop"),
]


@pytest.mark.parametrize(
    ("path", "body", "param"), OVER_THE_CAPS, ids=[f"{p} {f}" for p, _, f in OVER_THE_CAPS]
)
async def test_generation_routes_share_the_caps(
    http: aiohttp.ClientSession, path: str, body: dict[str, Any], param: str
) -> None:
    async with http.post(path, json=body) as r:
        err = await _refused(r, 400)
    assert err["param"] == param, err


async def test_native_routes_accept_what_is_within_the_caps(http: aiohttp.ClientSession) -> None:
    body = {**NATIVE_CHAT, "kind": "inline", "priority": "interactive", "stop": ["\n\n"]}
    async with http.post("/ingot/v1/chat", json=body) as r:
        assert r.status == 200, await r.text()
        assert b"event: done" in await r.read()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/ingot/v1/models/import", {"path": "/tmp/a\x00b.gguf"}, "path"),
        ("/ingot/v1/models/compile", {"source": "/tmp/a\x00b"}, "source"),
    ],
    ids=["import", "compile"],
)
async def test_a_path_no_file_can_have_is_a_400_before_the_stream(
    http: aiohttp.ClientSession, path: str, body: dict[str, str], param: str
) -> None:
    async with http.post(path, json=body) as r:
        err = await _refused(r, 400)
    assert err["param"] == param and "NUL" in err["message"], err
