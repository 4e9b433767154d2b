"""IngotServer: the engine process's JSON-RPC side — lifecycle, engine ownership, REST hosting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from lsprotocol import types
from pydantic import BaseModel, ValidationError
from pygls.lsp.server import LanguageServer

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.distribution import ingot_version
from engine.events import ModelStateEvent
from engine.service import EngineService
from protocol.jsonrpc.service import InitializationOptions
from server import translate
from server.jsonrpc.forwarding import Forwarder, OwnerUnreachable
from server.jsonrpc.protocol import ALREADY_INITIALIZED, INVALID_REQUEST, IngotProtocol, RpcError
from server.rest.settings import RestSettings
from server.state import (
    ServiceState,
    clear_state,
    live_state,
    ownership_lock,
    pid_alive,
    write_state,
)

log = logging.getLogger("ingot.jsonrpc")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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
        self.rest_error: str | None = None
        self._initialized = False
        self._takeover = asyncio.Lock()
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

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls shows "Error in server: ..." to the user for failed notifications; log one line
        instead (requests already answer with an error)."""
        cause = error.__cause__ or error.__context__ or error
        log.error("error handling a message: %s: %s", type(cause).__name__, cause)

    def notify(self, method: str, params: BaseModel | dict[str, Any]) -> None:
        payload = dump(params) if isinstance(params, BaseModel) else params
        self.protocol.notify(method, payload)

    def send_progress(self, token: str | int, value: dict[str, Any]) -> None:
        """A `$/progress` notification written straight to the wire. Partial results go out once
        per token, and pygls' path (lsprotocol types, cattrs, its own framing) cost about a tenth
        of the decode rate on two cores; this one is a single json.dumps."""
        writer = self.protocol.writer
        if writer is None:
            return
        body = json.dumps(
            {"jsonrpc": "2.0", "method": "$/progress", "params": {"token": token, "value": value}},
            separators=(",", ":"),
        ).encode()
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    # -- lifecycle -------------------------------------------------------------------------------
    def start_engine(self, params: types.InitializeParams) -> None:
        if self.engine is not None:
            # A second `initialize` must not build a second engine (IngotProtocol answers it).
            raise RpcError(INVALID_REQUEST, ALREADY_INITIALIZED)
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

    def rest_settings(self) -> RestSettings:
        """The REST settings from the environment (INGOT_API_KEY, INGOT_ALLOWED_HOSTS, ...), with
        `restHost`/`restPort` from initializationOptions on top; the engine's port defaults to a
        free one. Raises ValueError for settings that are invalid or unsafe."""
        o = self.options
        host = o.rest_host if "rest_host" in o.model_fields_set else None
        port = o.rest_port
        if port is None and not os.environ.get("INGOT_REST_PORT"):
            port = 0
        settings = RestSettings.from_env(host=host, port=port)
        settings.check()
        return settings

    def _api_key(self) -> str | None:
        try:
            return self.rest_settings().api_key
        except ValueError:
            return os.environ.get("INGOT_API_KEY") or None

    async def on_initialized(self) -> None:
        if self._initialized:
            log.warning("`initialized` was sent twice; ignored")
            return
        self._initialized = True
        engine = self.service
        await engine.start()
        assert self.home is not None
        async with ownership_lock(self.home):
            owner = live_state(self.home)
            if owner is not None and owner.pid != os.getpid():
                # Another engine or service owns this home: do not load models twice.
                self._forward_to(owner)
            elif self.options.rest_enabled:
                await self._start_rest()
        self._announce()

    def _announce(self) -> None:
        if self.rest_url:
            self.notify(
                "ingot/serviceReady",
                {"url": self.rest_url, "pid": os.getpid(), "mode": self.mode},
            )

    def _forward_to(self, owner: ServiceState) -> None:
        self.mode = "forwarding"
        self.forwarded_to = owner.url
        self.rest_url = owner.url
        # The owner's state lets the forwarder check who answers at its URL before the home's
        # secret goes there.
        self.forwarder = Forwarder(owner.url, api_key=self._api_key(), owner=owner, home=self.home)
        log.info("another Ingot process (pid %s) serves %s; forwarding", owner.pid, owner.url)

    async def _start_rest(self) -> bool:
        """Start the REST server and claim the home (call under `ownership_lock`). On invalid
        settings, tell the user (window/showMessage) and say why in ingot/service/status."""
        from server.rest.runner import start_rest_server

        try:
            settings = self.rest_settings()
        except ValueError as e:
            self.rest_error = f"The REST port was not started: {e}"
            log.error("%s", self.rest_error)
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=self.rest_error)
            )
            return False
        try:
            self.rest = await start_rest_server(self.service, settings)
        except OSError as e:
            log.warning(
                "REST port %s unavailable (%s); using a free port", settings.port, e.strerror
            )
            self.rest = await start_rest_server(self.service, replace(settings, port=0))
        except ValueError as e:  # the home's secret file must not be used (it says how to fix)
            self.rest_error = f"The REST port was not started: {e}"
            log.error("%s", self.rest_error)
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=self.rest_error)
            )
            return False
        self.rest_url = str(self.rest.url)
        self.rest_error = None
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
        return True

    async def ask_owner(self, ask: Callable[[Forwarder], Awaitable[T]]) -> T | None:
        """Ask the engine that owns the home, when this one forwards; None when this engine
        serves the home itself (possibly because it just took over from an owner that died)."""
        while (fwd := self.forwarder) is not None:
            try:
                return await ask(fwd)
            except OwnerUnreachable as e:
                # Refused: the request never reached the owner, so asking again is safe.
                if not (e.refused and await self.take_over()):
                    raise
        return None

    async def take_over(self) -> bool:
        """The owner this engine forwards to refused the connection: forward to the home's new
        owner if there is one, or become the owner (REST port, state file, `ingot/serviceReady`
        with mode "engine"). True when the request should be dispatched again."""
        async with self._takeover:
            if self.forwarder is None:
                return True  # another request already took over
            assert self.home is not None
            async with ownership_lock(self.home):
                owner = live_state(self.home)
                if owner is not None and owner.pid != os.getpid():
                    if owner.url == self.forwarded_to:
                        return False  # alive but not answering: nothing to take over
                    old = self.forwarder
                    self._forward_to(owner)
                    await old.close()
                    self._announce()
                    return True
                log.info(
                    "the owner at %s is gone; this engine now owns %s", self.forwarded_to, self.home
                )
                old = self.forwarder
                self.forwarder = None
                self.mode = "engine"
                self.forwarded_to = None
                self.rest_url = None
                await old.close()
                if self.options.rest_enabled:
                    await self._start_rest()
            self._announce()
            return True

    async def _watch_parent(self, pid: int) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not pid_alive(pid):
                log.info("parent process %s is gone; shutting down", pid)
                self.protocol._shutdown = True
                self.protocol.exit_code = 0
                self.protocol.exit_event.set()
                return

    async def close(self) -> None:
        # Wait for what was running (a start-up still claiming the home, telemetry pushes) to
        # stop, so nothing writes the state file after it is cleared below.
        tasks = [t for t in self.tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._unsubscribe_state:
            self._unsubscribe_state()
            self._unsubscribe_state = None
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
