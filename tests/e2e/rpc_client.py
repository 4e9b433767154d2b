"""A pytest-lsp client wired for Ingot: records partial results, notifications, progress and the
engine's stderr; and a raw client for lifecycle rules pytest-lsp would paper over."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lsprotocol import types
from lsprotocol.converters import get_converter
from pytest_lsp import LanguageClient
from pytest_lsp.client import make_test_lsp_client

from tests.support.paths import REPO

_CONVERTER = get_converter()


def plain(obj: Any) -> Any:
    """pygls turns JSON objects into namedtuples; tests want dicts."""
    if hasattr(obj, "__attrs_attrs__"):  # an LSP type (e.g. ShowMessageParams)
        return plain(_CONVERTER.unstructure(obj))
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, list | tuple):
        return [plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


class IngotTestClient:
    def __init__(self, client: LanguageClient) -> None:
        self.lsp = client
        self.partials: dict[Any, list[dict[str, Any]]] = {}
        self.work: dict[Any, list[dict[str, Any]]] = {}
        self.notifications: dict[str, list[dict[str, Any]]] = {}
        self.stderr: list[str] = []

    @property
    def pid(self) -> int:
        assert self.lsp._server is not None
        return self.lsp._server.pid

    def stderr_text(self) -> str:
        return "".join(self.stderr)

    async def request(self, method: str, params: Any = None) -> Any:
        return plain(await self.lsp.protocol.send_request_async(method, params))

    def seen(self, method: str) -> list[dict[str, Any]]:
        return self.notifications.get(method, [])

    async def wait_for(self, method: str, pred: Any = None, timeout: float = 30) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for n in self.seen(method):
                if pred is None or pred(n):
                    return n
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {method} notification matching within {timeout}s")


def make_client() -> IngotTestClient:
    lsp = make_test_lsp_client()
    wrapper = IngotTestClient(lsp)

    def on_progress(params: types.ProgressParams) -> None:
        value = plain(params.value)
        if isinstance(value, dict) and value.get("kind") in ("begin", "report", "end"):
            wrapper.work.setdefault(params.token, []).append(value)
        else:
            wrapper.partials.setdefault(params.token, []).append(value)

    def on_create(params: types.WorkDoneProgressCreateParams) -> None:
        wrapper.work.setdefault(params.token, [])

    lsp.protocol.fm._features[types.PROGRESS] = on_progress
    lsp.protocol.fm._features[types.WINDOW_WORK_DONE_PROGRESS_CREATE] = on_create
    for method in (
        "ingot/serviceReady",
        "ingot/model/stateChanged",
        "ingot/telemetry/sample",
        "ingot/telemetry/request",
        types.WINDOW_SHOW_MESSAGE,
    ):

        def record(params: Any, method: str = method) -> None:
            wrapper.notifications.setdefault(method, []).append(plain(params))

        lsp.protocol.fm._features[method] = record
    return wrapper


def engine_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "INGOT_HOME": str(home),
            "INGOT_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update(extra or {})
    return env


async def _keep_stderr(client: IngotTestClient) -> None:
    """Record the engine's stderr (and still pass it on, as pytest-lsp does)."""
    server = client.lsp._server
    if server is None or server.stderr is None:
        return
    while (line := await server.stderr.readline()) != b"":
        client.stderr.append(line.decode("utf-8", "replace"))
        sys.stderr.buffer.write(line)


@asynccontextmanager
async def engine(
    home: Path,
    *,
    options: dict[str, Any] | None = None,
    initialize: bool = True,
    env: dict[str, str] | None = None,
) -> AsyncIterator[IngotTestClient]:
    client = make_client()
    await client.lsp.start_io(sys.executable, "-m", "server", env=engine_env(home, env))
    if client.lsp._stderr_forwarder is not None:
        client.lsp._stderr_forwarder.cancel()
    client.lsp._stderr_forwarder = asyncio.create_task(_keep_stderr(client))
    try:
        if initialize:
            await client.lsp.initialize_session(
                types.InitializeParams(
                    capabilities=types.ClientCapabilities(
                        window=types.WindowClientCapabilities(work_done_progress=True)
                    ),
                    initialization_options={"restPort": 0, **(options or {})},
                )
            )
        yield client
    finally:
        if initialize and client.lsp._server and client.lsp._server.returncode is None:
            await client.lsp.shutdown_session()
        await client.lsp.stop()


class RawEngine:
    """The engine over bare stdio frames, for the lifecycle rules and for bytes that are not
    valid JSON-RPC (which a real client would never send)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next = 0

    @classmethod
    async def start(cls, home: Path, env: dict[str, str] | None = None) -> RawEngine:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=engine_env(home, env),
        )
        return cls(proc)

    def send_bytes(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def request(self, method: str, params: Any = None) -> int:
        self._next += 1
        self.send({"id": self._next, "method": method, "params": params})
        return self._next

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"method": method, "params": params})

    async def read(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        async def frame() -> dict[str, Any]:
            length = None
            while True:
                line = await stdout.readline()
                if not line:
                    raise EOFError("the engine closed stdout")
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None
            data: dict[str, Any] = json.loads(await stdout.readexactly(length))
            return data

        return await asyncio.wait_for(frame(), timeout)

    async def reply(self, timeout: float = 30) -> dict[str, Any]:
        """The next response (notifications and requests from the engine are skipped)."""
        while True:
            msg = await self.read(timeout)
            if "method" not in msg:
                return msg

    async def response(self, msg_id: int, timeout: float = 30) -> dict[str, Any]:
        """The response to `msg_id` (notifications and requests from the engine are skipped)."""
        while True:
            msg = await self.read(timeout)
            if msg.get("id") == msg_id and "method" not in msg:
                return msg

    async def initialize(self, options: dict[str, Any] | None = None, **params: Any) -> None:
        msg_id = self.request(
            "initialize",
            {"capabilities": {}, "initializationOptions": {"restPort": 0, **(options or {})}}
            | params,
        )
        assert "result" in await self.response(msg_id, timeout=60)
        self.notify("initialized", {})

    async def exit_code(self, timeout: float = 30) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stderr_text(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode("utf-8", "replace")

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
