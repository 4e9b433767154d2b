"""End-to-end: well-framed JSON that is not a valid request, sent to the real engine (`python -m
server`) over stdio — ids of every odd type, a missing or wrong `jsonrpc`, bad methods, params of the
wrong shape for every method in the registry, batches, stray notifications, bogus cancels, and
requests before `initialize` and after `shutdown`. Each gets the JSON-RPC error it should (a
notification gets nothing), stdout carries nothing but frames, and the engine answers a normal
request right after. (Broken framing itself: test_jsonrpc_framing.py.)"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from protocol.registry import REGISTRY, MethodSpec
from tests.e2e.rest_server import copy_home
from tests.e2e.rpc_client import RawEngine

MODEL = "smollm2-135m"
REQUESTS = [s for s in REGISTRY if s.kind == "request" and s.direction == "client->server"]
NOTIFICATIONS = [s for s in REGISTRY if s.kind == "notification"]
INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32600, -32601, -32602
INTERNAL = (-32603, -32000)  # JSON-RPC's internal error and the engine's `internal` kind
HUGE = 200_000

# Params each method accepts (or refuses only for what the engine finds, never for their shape),
# chosen so that nothing is deleted, downloaded or built: the cases below change one field.
BASE: dict[str, dict[str, Any] | None] = {
    "ingot/cache/info": None,
    "ingot/cache/move": {"path": "not/an/absolute/path"},
    "ingot/cache/verify": {"model": "no-such-model"},
    "ingot/catalog/list": {"task": "chat-completion"},
    "ingot/chat": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "maxTokens": 2},
    "ingot/complete": {"model": MODEL, "prompt": "def add(a, b):", "maxTokens": 2},
    "ingot/console/close": {"sessionId": "console-none"},
    "ingot/console/history": {"sessionId": "console-none"},
    "ingot/console/open": {"model": MODEL, "maxTokens": 2},
    "ingot/console/reset": {"sessionId": "console-none"},
    "ingot/console/send": {"sessionId": "console-none", "message": "Hi"},
    "ingot/edit": {
        "uri": "file:///fuzzD/not-open.py",
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
        "instruction": "Upper-case it",
        "model": MODEL,
        "maxTokens": 2,
    },
    "ingot/embed": {"model": "no-such-embedder", "input": "hi"},
    "ingot/hardware": None,
    "ingot/model/compile": {"source": "/nonexistent/fuzzD-source"},
    "ingot/model/delete": {"model": "no-such-model"},
    "ingot/model/download": {"model": "no-such-model"},
    "ingot/model/import": {"path": "/nonexistent/fuzzD.gguf"},
    "ingot/model/info": {"model": MODEL},
    "ingot/model/load": {"model": MODEL, "ttl": 600},
    "ingot/model/register": {"path": "/nonexistent/fuzzD-folder"},
    "ingot/model/unload": {"model": "no-such-model"},
    "ingot/model/verify": {"model": "no-such-model"},
    # A closed port on this machine: an attach fails at once and nothing leaves it.
    "ingot/remote/attach": {"url": "http://127.0.0.1:9"},
    "ingot/remote/detach": {"remote": "no-such-remote"},
    "ingot/remote/list": None,
    "ingot/service/status": None,
    "ingot/telemetry/history": None,
    "ingot/telemetry/subscribe": {"intervalMs": 60_000},
    "ingot/telemetry/unsubscribe": None,
}
WITH_PARAMS = [s for s in REQUESTS if s.params is not None]
WITHOUT_PARAMS = [s for s in REQUESTS if s.params is None]
# Values of a type no field expects, tried in order until one is refused for the field alone.
WRONG = ({"wrong": [1]}, ["wrong"], "wrong", 123_456_789, True)
HEADER = re.compile(rb"(Content-Length|Content-Type): *([^\r\n]*)\r\n")


class StrictEngine(RawEngine):
    """The engine over stdio, reading stdout strictly: every byte must belong to a frame whose
    body is a JSON-RPC 2.0 object. Its stderr is read all along (a full pipe would block it)."""

    stderr_lines: list[str]
    _drain: asyncio.Task[None]

    @classmethod
    async def start(cls, home: Path, env: dict[str, str] | None = None) -> StrictEngine:
        e = await super().start(home, env)
        assert isinstance(e, StrictEngine)
        e.stderr_lines = []
        e._drain = asyncio.create_task(e._read_stderr())
        return e

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    async def stderr_text(self) -> str:
        await asyncio.wait({self._drain}, timeout=10)
        return "".join(self.stderr_lines)

    async def read(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        async def frame() -> dict[str, Any]:
            length = None
            while True:
                line = await stdout.readline()
                if not line:
                    raise EOFError("the engine closed stdout")
                if line == b"\r\n":
                    break
                m = HEADER.fullmatch(line)
                assert m, f"stdout holds bytes that are not a frame header: {line[:200]!r}"
                if m.group(1) == b"Content-Length":
                    length = int(m.group(2))
            assert length is not None, "a frame without Content-Length"
            msg = json.loads(await stdout.readexactly(length))
            assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0", msg
            return msg

        return await asyncio.wait_for(frame(), timeout)

    def send_json(self, message: Any) -> None:
        """Any JSON value as one frame, exactly as given (no `jsonrpc` added)."""
        self.send_bytes(json.dumps(message).encode())

    async def rest_of_stdout(self) -> list[dict[str, Any]]:
        """Every frame left on stdout once the engine has exited (strictly parsed)."""
        out = []
        while True:
            try:
                out.append(await self.read(10))
            except EOFError:
                return out


async def replies_then_status(e: StrictEngine, timeout: float = 30) -> list[dict[str, Any]]:
    """Sends a status request and returns every response that arrives before its answer: the
    engine still answers, and whatever the case before it provoked is in the list."""
    status_id = e.request("ingot/service/status")
    got: list[dict[str, Any]] = []
    while True:
        msg = await e.read(timeout)
        if "method" in msg:
            continue  # the engine's own notifications
        if msg.get("id") == status_id:
            assert msg["result"]["pid"] == e.proc.pid, msg
            return got
        got.append(msg)


async def exchange(e: StrictEngine, message: Any, timeout: float = 30) -> list[dict[str, Any]]:
    e.send_json(message)
    return await replies_then_status(e, timeout)


async def answer(
    e: StrictEngine, msg_id: Any, method: str, params: Any, timeout: float = 60
) -> Any:
    """The response to one request (however long it takes), then a check that the engine still
    answers."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        message["params"] = params
    e.send_json(message)
    reply = await e.response(msg_id, timeout=timeout)
    assert await replies_then_status(e) == []
    return reply


def only_error(replies: list[dict[str, Any]], code: int, msg_id: Any) -> dict[str, Any]:
    assert len(replies) == 1, replies
    reply = replies[0]
    assert "result" not in reply and reply["id"] == msg_id, reply
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"], reply
    return reply


async def finish(e: StrictEngine) -> None:
    """shutdown + exit: exit code 0, only frames left on stdout, no traceback in the log."""
    try:
        if e.proc.returncode is None:
            sid = e.request("shutdown")
            await e.response(sid, timeout=60)  # a result, or an error after an earlier shutdown
            e.notify("exit")
            assert await e.exit_code(timeout=30) == 0
        await e.rest_of_stdout()
        log = await e.stderr_text()
        assert "Traceback" not in log, log[-5000:]
    finally:
        await e.close()


@pytest.fixture(scope="module")
async def rpc(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> AsyncIterator[StrictEngine]:
    """One initialized engine on a private seeded home for the cases that leave it running."""
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("negative") / "home")
    e = await StrictEngine.start(home)
    await e.initialize()
    yield e
    await finish(e)


@pytest.fixture
async def fresh(seeded_home: Path) -> AsyncIterator[StrictEngine]:
    """An engine not yet initialized."""
    e = await StrictEngine.start(seeded_home)
    try:
        yield e
    finally:
        await finish(e)


def test_base_params_cover_the_registry() -> None:
    """A new method needs a line in BASE, so every case below runs for it too."""
    assert set(BASE) == {s.name for s in REQUESTS}
    for spec in WITH_PARAMS:
        assert spec.params is not None
        spec.params.model_validate(BASE[spec.name])


# -- ids -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "msg_id",
    [{"a": 1}, [1], [], 1.5, 1.0, True, False, None],
    ids=["object", "array", "empty-array", "float", "integral-float", "true", "false", "null"],
)
async def test_an_id_that_is_not_an_integer_or_string_is_an_invalid_request(
    rpc: StrictEngine, msg_id: Any
) -> None:
    replies = await exchange(
        rpc, {"jsonrpc": "2.0", "id": msg_id, "method": "ingot/service/status"}
    )
    only_error(replies, INVALID_REQUEST, None)


@pytest.mark.parametrize(
    "msg_id",
    [2**70, -(2**63), 0, -1, "x" * 100_000, "", 'ünïcödé \u2028 \\ " id'],
    ids=["huge-int", "min-int64", "zero", "negative", "long-string", "empty-string", "odd-chars"],
)
async def test_any_integer_or_string_id_is_echoed_exactly(rpc: StrictEngine, msg_id: Any) -> None:
    reply = await answer(rpc, msg_id, "ingot/service/status", None)
    assert reply["id"] == msg_id and type(reply["id"]) is type(msg_id)
    assert reply["result"]["pid"] == rpc.proc.pid


# -- the envelope ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "envelope",
    [{}, {"jsonrpc": "1.0"}, {"jsonrpc": 2.0}, {"jsonrpc": None}, {"jsonrpc": "2.0 "}],
    ids=["missing", "1.0", "number", "null", "padded"],
)
async def test_a_missing_or_wrong_jsonrpc_member_is_an_invalid_request(
    rpc: StrictEngine, envelope: dict[str, Any]
) -> None:
    replies = await exchange(rpc, {**envelope, "id": "env", "method": "ingot/service/status"})
    only_error(replies, INVALID_REQUEST, "env")


@pytest.mark.parametrize("method", [123, None, [], {}, True], ids=str)
async def test_a_method_that_is_not_a_string_is_an_invalid_request(
    rpc: StrictEngine, method: Any
) -> None:
    replies = await exchange(rpc, {"jsonrpc": "2.0", "id": "m", "method": method})
    only_error(replies, INVALID_REQUEST, "m")


@pytest.mark.parametrize(
    "method",
    ["", "ingot/bogus", "$/bogus", "bogus", "INGOT/CHAT", "ingot/chat ", "x" * 10_000],
    ids=["empty", "ingot-prefix", "dollar", "plain", "wrong-case", "trailing-space", "long"],
)
async def test_an_unknown_method_is_method_not_found(rpc: StrictEngine, method: str) -> None:
    replies = await exchange(rpc, {"jsonrpc": "2.0", "id": "u", "method": method})
    only_error(replies, METHOD_NOT_FOUND, "u")


async def test_a_message_with_an_id_but_no_method_or_result_is_ignored(rpc: StrictEngine) -> None:
    """No method: a response, to a request the engine never sent; there is no one to answer."""
    assert await exchange(rpc, {"jsonrpc": "2.0", "id": 424242}) == []
    assert await exchange(rpc, {"jsonrpc": "2.0", "id": 424243, "result": {"x": 1}}) == []
    assert await exchange(rpc, {"jsonrpc": "2.0", "id": 424244, "error": {"code": 1}}) == []
    assert await exchange(rpc, {"jsonrpc": "2.0"}) == []


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [{"jsonrpc": "2.0", "id": 901, "method": "ingot/service/status"}],
        [
            {
                "jsonrpc": "2.0",
                "id": 902,
                "method": "ingot/model/delete",
                "params": {"model": MODEL},
            },
            {"jsonrpc": "2.0", "method": "ingot/bogus"},
        ],
        [1, "two", None],
        [[{"jsonrpc": "2.0", "id": 903, "method": "ingot/service/status"}]],
    ],
    ids=["empty", "one", "two", "not-messages", "nested"],
)
async def test_a_batch_is_one_invalid_request_and_runs_nothing(
    rpc: StrictEngine, batch: list[Any]
) -> None:
    """LSP has no batches: the whole array gets one -32600 (id null) and none of it runs."""
    only_error(await exchange(rpc, batch), INVALID_REQUEST, None)
    info = await answer(rpc, "after-batch", "ingot/model/info", {"model": MODEL})
    assert info["result"]["cached"] is True  # the batched delete did not run


# -- params --------------------------------------------------------------------------------------
def _ids(specs: list[MethodSpec]) -> list[str]:
    return [s.name for s in specs]


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_ids(WITH_PARAMS))
async def test_params_of_the_wrong_shape_are_refused_for_every_method(
    rpc: StrictEngine, spec: MethodSpec
) -> None:
    for i, params in enumerate(([], [BASE[spec.name]], [1, 2])):
        reply = await answer(rpc, f"shape-{i}", spec.name, params)
        assert reply.get("error", {}).get("code") == INVALID_PARAMS, (params, reply)
    for i, params in enumerate(("a string", 5, 1.5, True)):
        # JSON-RPC: params, when present, is an object or an array.
        reply = await answer(rpc, f"scalar-{i}", spec.name, params)
        assert reply.get("error", {}).get("code") == INVALID_REQUEST, (params, reply)


@pytest.mark.parametrize("spec", WITHOUT_PARAMS, ids=_ids(WITHOUT_PARAMS))
async def test_a_method_without_params_refuses_params(rpc: StrictEngine, spec: MethodSpec) -> None:
    for i, empty in enumerate((None, {}, [])):
        reply = await answer(rpc, f"empty-{i}", spec.name, empty)
        assert "result" in reply, (empty, reply)
    for i, params in enumerate(({"bogus": 1}, [1], {"refresh": True})):
        reply = await answer(rpc, f"extra-{i}", spec.name, params)
        assert reply.get("error", {}).get("code") == INVALID_PARAMS, (params, reply)
    for i, params in enumerate(("a string", 5, False)):
        reply = await answer(rpc, f"scalar-{i}", spec.name, params)
        assert reply.get("error", {}).get("code") == INVALID_REQUEST, (params, reply)


def _wrong_value(model: type[BaseModel], base: dict[str, Any], alias: str) -> Any:
    """A value for `alias` of a type the field does not take (checked with the model itself)."""
    for value in WRONG:
        try:
            model.model_validate({**base, alias: value})
        except ValidationError as e:
            if any(err["loc"][:1] == (alias,) for err in e.errors()):
                return value
    raise AssertionError(f"no wrong value for {model.__name__}.{alias}")


def _aliases(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_ids(WITH_PARAMS))
async def test_a_field_of_the_wrong_type_is_invalid_params_naming_it(
    rpc: StrictEngine, spec: MethodSpec
) -> None:
    assert spec.params is not None
    base = BASE[spec.name]
    assert base is not None
    for alias in _aliases(spec.params):
        value = _wrong_value(spec.params, base, alias)
        reply = await answer(rpc, f"type-{alias}", spec.name, {**base, alias: value})
        error = reply.get("error", {})
        assert error.get("code") == INVALID_PARAMS, (alias, value, reply)
        assert any(f.split(".")[0] == alias for f in error["data"]["fields"]), (alias, reply)


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_ids(WITH_PARAMS))
async def test_an_unknown_field_is_invalid_params_naming_it(
    rpc: StrictEngine, spec: MethodSpec
) -> None:
    base = BASE[spec.name]
    assert base is not None
    for extra in ({"bogusField": 1}, {"model_name": "x"}, {"": None}):
        reply = await answer(rpc, "extra", spec.name, {**base, **extra})
        error = reply.get("error", {})
        assert error.get("code") == INVALID_PARAMS, (extra, reply)
        name = next(iter(extra))
        if name:
            assert name in error["data"]["fields"], reply


def _fields_of_type(model: type[BaseModel], json_type: str) -> list[str]:
    props: dict[str, Any] = model.model_json_schema()["properties"]

    def types(schema: dict[str, Any]) -> set[str]:
        found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
        for branch in schema.get("anyOf", []):
            found |= types(branch)
        return found

    return [alias for alias, schema in props.items() if json_type in types(schema)]


def _acceptable(reply: dict[str, Any]) -> bool:
    """A result, or an error that is not an internal one."""
    if "result" in reply:
        return True
    return reply["error"]["code"] not in INTERNAL


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_ids(WITH_PARAMS))
async def test_huge_strings_get_an_answer_that_is_not_an_internal_error(
    rpc: StrictEngine, spec: MethodSpec
) -> None:
    assert spec.params is not None
    base = BASE[spec.name]
    assert base is not None
    for alias in _fields_of_type(spec.params, "string"):
        for huge in ("x" * HUGE, "/" + "y/" * (HUGE // 2), "\x00" * 1000):
            reply = await answer(rpc, f"huge-{alias}", spec.name, {**base, alias: huge}, 120)
            assert _acceptable(reply), (alias, huge[:20], json.dumps(reply)[:1000])
            if "error" in reply:
                # An error names the problem without echoing all of the input back.
                assert len(reply["error"]["message"]) < 4000, (
                    alias,
                    reply["error"]["message"][:200],
                )


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_ids(WITH_PARAMS))
async def test_huge_numbers_get_an_answer_that_is_not_an_internal_error(
    rpc: StrictEngine, spec: MethodSpec
) -> None:
    assert spec.params is not None
    base = BASE[spec.name]
    assert base is not None
    numeric = set(_fields_of_type(spec.params, "integer")) | set(
        _fields_of_type(spec.params, "number")
    )
    for alias in sorted(numeric):
        for number in (10**40, -(10**40), 1e308, -1e308, 2**63, 0, -1):
            reply = await answer(rpc, f"num-{alias}", spec.name, {**base, alias: number}, 120)
            assert _acceptable(reply), (alias, number, json.dumps(reply)[:1000])
        await answer(rpc, "unload", "ingot/model/unload", {"model": MODEL, "force": True})


# -- notifications -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        {"method": "ingot/bogus", "params": {"a": 1}},
        {"method": "$/bogus"},
        {"method": "bogus", "params": [1, 2]},
        {"method": "", "params": None},
        {"method": "ingot/model/stateChanged", "params": {"modelId": 5}},
        {"method": "ingot/chat", "params": 5},
        {"method": "ingot/model/delete", "params": {"model": 5}},
        {"method": "textDocument/didOpen", "params": {"textDocument": {"uri": 1}}},
        {"method": "textDocument/didChange", "params": "x"},
        {"method": "initialized", "params": {"again": True}},
        {"method": "$/setTrace", "params": {"value": "loud"}},
    ],
    ids=lambda m: f"{m['method'] or 'empty'}",
)
async def test_a_notification_never_gets_an_answer(
    rpc: StrictEngine, message: dict[str, Any]
) -> None:
    assert await exchange(rpc, {"jsonrpc": "2.0", **message}) == []


@pytest.mark.parametrize(
    "params",
    [
        {"id": 999_999},
        {"id": "nope"},
        {"id": None},
        {"id": {"x": 1}},
        {"id": [1]},
        {},
        None,
        [],
        "x",
    ],
    ids=[
        "unknown-int",
        "unknown-string",
        "null",
        "object",
        "array",
        "no-id",
        "none",
        "list",
        "str",
    ],
)
async def test_a_cancel_for_no_such_request_is_ignored(rpc: StrictEngine, params: Any) -> None:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": "$/cancelRequest"}
    if params is not None:
        message["params"] = params
    assert await exchange(rpc, message) == []
    bogus_token = {"jsonrpc": "2.0", "method": "window/workDoneProgress/cancel"}
    assert await exchange(rpc, {**bogus_token, "params": {"token": params}}) == []


async def test_a_bogus_cancel_leaves_a_running_request_alone(rpc: StrictEngine) -> None:
    chat = dict(BASE["ingot/chat"] or {}, maxTokens=4, temperature=0)
    rpc.send_json({"jsonrpc": "2.0", "id": 7070, "method": "ingot/chat", "params": chat})
    for bogus in ("7070", 7071, 7070.0, [7070]):
        rpc.send_json({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": bogus}})
    reply = await rpc.response(7070, timeout=120)
    assert "result" in reply and reply["result"]["usage"]["completionTokens"] >= 1, reply


@pytest.mark.parametrize(
    "method", ["$/cancelRequest", "initialized", "exit", "$/setTrace", "textDocument/didClose"]
)
async def test_a_notification_sent_as_a_request_gets_an_error(
    rpc: StrictEngine, method: str
) -> None:
    """A client that waits for an answer to it must not wait forever."""
    params: dict[str, Any] = {
        "$/cancelRequest": {"id": 1},
        "$/setTrace": {"value": "off"},
        "textDocument/didClose": {"textDocument": {"uri": "file:///fuzzD/none.py"}},
    }.get(method, {})
    replies = await exchange(rpc, {"jsonrpc": "2.0", "id": "n", "method": method, "params": params})
    only_error(replies, INVALID_REQUEST, "n")
    assert rpc.proc.returncode is None


# -- lifecycle -----------------------------------------------------------------------------------
async def test_every_method_before_initialize_is_refused_and_initialize_still_works(
    fresh: StrictEngine,
) -> None:
    e = fresh
    for spec in REQUESTS:
        e.send_json(
            {"jsonrpc": "2.0", "id": spec.name, "method": spec.name, "params": BASE[spec.name]}
        )
        reply = await e.response(spec.name, timeout=30)
        assert reply.get("error", {}).get("code") == -32002, reply
    for method in ("shutdown", "ingot/bogus", "textDocument/inlineCompletion"):
        e.send_json({"jsonrpc": "2.0", "id": method, "method": method})
        reply = await e.response(method, timeout=30)
        assert reply.get("error", {}).get("code") == -32002, reply
    # Notifications before initialize are dropped, `initialized` included.
    for message in (
        {"method": "initialized", "params": {}},
        {"method": "$/cancelRequest", "params": {"id": "ingot/chat"}},
        {"method": "ingot/bogus"},
    ):
        e.send_json({"jsonrpc": "2.0", **message})
    await e.initialize()
    assert await replies_then_status(e) == []


async def test_after_shutdown_every_request_is_an_invalid_request_and_exit_is_clean(
    fresh: StrictEngine,
) -> None:
    e = fresh
    await e.initialize()
    sid = e.request("shutdown")
    assert (await e.response(sid, timeout=60))["result"] is None
    for spec in REQUESTS:
        e.send_json(
            {"jsonrpc": "2.0", "id": spec.name, "method": spec.name, "params": BASE[spec.name]}
        )
        reply = await e.response(spec.name, timeout=30)
        # LSP: "requests after a shutdown request should error with InvalidRequest".
        assert reply.get("error", {}).get("code") == INVALID_REQUEST, reply
    for method in ("shutdown", "initialize", "ingot/bogus"):
        e.send_json({"jsonrpc": "2.0", "id": method, "method": method, "params": {}})
        reply = await e.response(method, timeout=30)
        assert reply.get("error", {}).get("code") == INVALID_REQUEST, reply
    e.send_json({"jsonrpc": "2.0", "method": "ingot/bogus"})
    e.notify("exit")
    assert await e.exit_code(timeout=30) == 0
    assert await e.rest_of_stdout() == []
