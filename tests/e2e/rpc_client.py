"""A pytest-lsp client wired for Ingot: records partial results, notifications and progress."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient
from pytest_lsp.client import make_test_lsp_client

from tests.support.paths import REPO


def plain(obj: Any) -> Any:
    """pygls turns JSON objects into namedtuples; tests want dicts."""
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
    ):

        def record(params: Any, method: str = method) -> None:
            wrapper.notifications.setdefault(method, []).append(plain(params))

        lsp.protocol.fm._features[method] = record
    return wrapper


def engine_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "INGOT_HOME": str(home),
            "INGOT_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


@asynccontextmanager
async def engine(
    home: Path, *, options: dict[str, Any] | None = None, initialize: bool = True
) -> AsyncIterator[IngotTestClient]:
    client = make_client()
    await client.lsp.start_io(sys.executable, "-m", "server", env=engine_env(home))
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
