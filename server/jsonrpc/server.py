"""IngotServer: the engine process's JSON-RPC side — lifecycle, engine ownership, REST hosting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import psutil
from lsprotocol import types
from pydantic import BaseModel, ValidationError
from pygls.lsp.server import LanguageServer

from engine.bootstrap import build_engine, ingot_version
from engine.config import EngineConfig
from engine.events import ModelStateEvent
from engine.service import EngineService
from protocol.jsonrpc.service import InitializationOptions
from server import translate
from server.jsonrpc.forwarding import Forwarder
from server.jsonrpc.protocol import IngotProtocol, RpcError
from server.state import ServiceState, clear_state, live_state, write_state

log = logging.getLogger("ingot.jsonrpc")

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], params: Any) -> M:
    """Validate custom-method params; -32602 naming every bad field."""
    try:
        return model.model_validate({} if params is None else params)
    except ValidationError as e:
        fields = [".".join(str(p) for p in err["loc"]) or "params" for err in e.errors()]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in e.errors()[:8]
        )
        raise RpcError(-32602, f"Invalid params: {detail}", {"fields": fields}) from None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


class IngotServer(LanguageServer):
    protocol: IngotProtocol

    def __init__(self) -> None:
        super().__init__(
            "ingot",
            ingot_version(),
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=IngotProtocol,
        )
        self.engine: EngineService | None = None
        self.options = InitializationOptions()
        self.home: Path | None = None
        self.rest: Any = None
        self.rest_url: str | None = None
        self.mode: Literal["engine", "forwarding"] = "engine"
        self.forwarded_to: str | None = None
        self.forwarder: Forwarder | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe_state: Any = None

    # -- helpers for handlers --------------------------------------------------------------------
    @property
    def service(self) -> EngineService:
        if self.engine is None:
            raise RpcError(-32002, "The engine is not started yet.")
        return self.engine

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def generate(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run ingot/chat or ingot/complete through its registered handler (which forwards when
        another engine owns the home), for handlers built on top of them (console, edit, inline)."""
        result: dict[str, Any] = await self.protocol.fm.features[method](params)
        return result

    def notify(self, method: str, params: BaseModel | dict[str, Any]) -> None:
        payload = dump(params) if isinstance(params, BaseModel) else params
        self.protocol.notify(method, payload)

    # -- lifecycle -------------------------------------------------------------------------------
    def start_engine(self, params: types.InitializeParams) -> None:
        self.options = parse(InitializationOptions, params.initialization_options)
        o = self.options
        overrides: dict[str, Any] = {
            "default_ttl_s": o.default_ttl,
            "threads": o.threads,
            "memory_budget_bytes": int(o.memory_budget_mb * 1024 * 1024)
            if o.memory_budget_mb
            else None,
        }
        if o.home:
            overrides["home"] = Path(o.home).expanduser()
        config = EngineConfig.from_env(**overrides)
        self.home = config.home
        self.engine = build_engine(config)
        self._unsubscribe_state = self.engine.events.add_listener(self._on_state)
        if params.process_id:
            self.spawn(self._watch_parent(params.process_id))

    def _on_state(self, e: ModelStateEvent) -> None:
        self.notify("ingot/model/stateChanged", translate.state_changed(e))

    async def on_initialized(self) -> None:
        engine = self.service
        await engine.start()
        assert self.home is not None
        owner = live_state(self.home)
        if owner is not None and owner.pid != os.getpid():
            # Another engine or service owns this home: do not load models twice.
            self.mode = "forwarding"
            self.forwarded_to = owner.url
            self.rest_url = owner.url
            self.forwarder = Forwarder(owner.url)
            log.info("another Ingot process (pid %s) serves %s; forwarding", owner.pid, owner.url)
        elif self.options.rest_enabled:
            await self._start_rest()
        if self.rest_url:
            self.notify(
                "ingot/serviceReady",
                {"url": self.rest_url, "pid": os.getpid(), "mode": self.mode},
            )

    async def _start_rest(self) -> None:
        from server.rest.runner import start_rest_server
        from server.rest.settings import RestSettings

        port = self.options.rest_port
        settings = RestSettings(host=self.options.rest_host, port=0 if port is None else port)
        try:
            self.rest = await start_rest_server(self.service, settings)
        except OSError as e:
            log.warning("REST port %s unavailable (%s); using a free port", port, e.strerror)
            settings = RestSettings(host=self.options.rest_host, port=0)
            self.rest = await start_rest_server(self.service, settings)
        self.rest_url = str(self.rest.url)
        assert self.home is not None
        write_state(
            self.home,
            ServiceState(
                pid=os.getpid(),
                url=self.rest_url,
                started_at=self.service.started_at,
                kind="engine",
                version=self.version,
                home=str(self.home),
            ),
        )

    async def _watch_parent(self, pid: int) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not psutil.pid_exists(pid):
                log.info("parent process %s is gone; shutting down", pid)
                self.protocol._shutdown = True
                self.protocol.exit_code = 0
                self.protocol.exit_event.set()
                return

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self._unsubscribe_state:
            self._unsubscribe_state()
        if self.rest is not None:
            with contextlib.suppress(Exception):
                await self.rest.stop()
            self.rest = None
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.home is not None and self.mode == "engine":
            clear_state(self.home, os.getpid())
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
