"""IngotProtocol: pygls' LSP protocol with the LSP rules pygls leaves out, and quiet engine errors.

- requests before `initialize` get -32002 (pygls answers them);
- custom methods keep their params as plain dicts (validated with pydantic in the handlers);
- engine errors become JSON-RPC errors with `data.kind` and a hint, without traceback logging;
- a cancelled generation answers -32800 with how many tokens it had produced;
- `exit` records its exit code (0 after `shutdown`, else 1) instead of raising SystemExit in a
  callback, which pygls would swallow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from concurrent.futures import Future
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage

from engine.errors import IngotError
from protocol.errors import error_for
from server.translate import error_payload

log = logging.getLogger("ingot.jsonrpc")

SERVER_NOT_INITIALIZED = -32002
ALWAYS_ALLOWED = {types.INITIALIZE, types.EXIT, "$/cancelRequest", "$/setTrace"}


class RpcError(JsonRpcException):
    """A JSON-RPC error carrying its own code and data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message=message, code=code, data=data)
        self.code = code


def engine_error(e: IngotError) -> RpcError:
    message = f"{e.message} {e.hint}" if e.hint else e.message
    return RpcError(error_for(e.kind).code, message, error_payload(e))


class IngotProtocol(LanguageServerProtocol):
    initialized = False
    exit_code: int | None = None
    # Filled by handlers when a generation is cancelled: msg id -> error data (tokens produced).
    cancel_data: dict[Any, dict[str, Any]]

    def __init__(self, server: Any, converter: Any) -> None:
        super().__init__(server, converter)
        self.cancel_data = {}
        self.exit_event = asyncio.Event()

    def structure_message(self, data: dict[str, Any]) -> Any:
        method = data.get("method")
        if (
            "jsonrpc" in data
            and isinstance(method, str)
            and method not in types.METHOD_TO_TYPES
            and "error" not in data
        ):
            params = data.get("params")
            if "id" in data:
                return JsonRPCRequestMessage(
                    id=data["id"], method=method, params=params, jsonrpc=data["jsonrpc"]
                )
            return JsonRPCNotification(method=method, params=params, jsonrpc=data["jsonrpc"])
        return super().structure_message(data)

    def handle_message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if not self.initialized and method is not None and method not in ALWAYS_ALLOWED:
            if getattr(message, "id", None) is not None:
                self._send_response(
                    message.id,
                    error=types.ResponseError(
                        code=SERVER_NOT_INITIALIZED,
                        message="The server is not initialized: send `initialize` first.",
                    ),
                )
            return
        if self._shutdown and method not in (types.EXIT, None):
            if getattr(message, "id", None) is not None:
                self._send_response(
                    message.id,
                    error=types.ResponseError(
                        code=types.LSPErrorCodes.RequestFailed.value
                        if hasattr(types.LSPErrorCodes, "RequestFailed")
                        else -32803,
                        message="The server is shutting down.",
                    ),
                )
            return
        super().handle_message(message)

    def _send_handler_result(self, future: Future[Any], *, msg_id: Any) -> None:
        self._request_futures.pop(msg_id, None)
        extra = self.cancel_data.pop(msg_id, None)
        if future.cancelled():
            data = extra or {}
            tokens = data.get("tokens")
            text = (
                f"The request was cancelled after {tokens} tokens."
                if tokens is not None
                else ("The request was cancelled.")
            )
            self._send_response(
                msg_id, error=RpcError(JsonRpcRequestCancelled.CODE, text, data).to_response_error()
            )
            return
        exc = future.exception()
        if isinstance(exc, IngotError):
            self._send_response(msg_id, error=engine_error(exc).to_response_error())
            return
        if isinstance(exc, RpcError):
            self._send_response(msg_id, error=exc.to_response_error())
            return
        if exc is not None:
            log.error("internal error in %s: %r", msg_id, exc, exc_info=exc)
            self._send_response(
                msg_id,
                error=RpcError(
                    -32603, f"Internal error: {type(exc).__name__}. See the engine log."
                ).to_response_error(),
            )
            return
        self._send_response(msg_id, result=future.result())

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(
        self, params: types.InitializeParams
    ) -> Generator[Any, Any, types.InitializeResult]:
        result = yield from super().lsp_initialize(params)
        self.initialized = True
        return result

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Generator[Any, Any, None]:
        if (user_handler := self.fm.features.get(types.EXIT)) is not None:
            yield user_handler, args, None
        self.exit_code = 0 if self._shutdown else 1
        self.exit_event.set()
