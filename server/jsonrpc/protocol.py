"""IngotProtocol: pygls' LSP protocol with the LSP rules pygls leaves out, and quiet engine errors.

- requests before `initialize` get -32002 (pygls answers them); a second `initialize` gets -32600
  and leaves the running engine alone;
- `textDocument/didChange` for a document that is not open is ignored (a warning in the log), and
  a message whose params do not fit its LSP type is logged in one line, not with a traceback;
- custom methods keep their params as plain dicts (validated with pydantic in the handlers);
- engine errors become JSON-RPC errors with `data.kind` and a hint, without traceback logging;
- a generation the client cancelled answers -32800 with how many tokens it had produced (one the
  engine stopped is an engine error, kind `cancelled`, with the reason);
- `exit` records its exit code (0 after `shutdown`, else 1) instead of raising SystemExit in a
  callback, which pygls would swallow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from concurrent.futures import Future
from typing import Any
from urllib.parse import unquote

from cattrs.errors import ClassValidationError
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcInvalidParams,
    JsonRpcRequestCancelled,
)
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
)

from engine.errors import IngotError
from protocol.errors import error_for
from server.translate import error_payload

log = logging.getLogger("ingot.jsonrpc")

SERVER_NOT_INITIALIZED = -32002
INVALID_REQUEST = -32600
ALREADY_INITIALIZED = (
    "The engine is already initialized: send `initialize` once per connection. "
    "The running engine is unchanged; start a new process for different options."
)
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
    shutdown_requested = False
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
        return self._structure_lsp(data)

    def _structure_lsp(self, data: dict[str, Any]) -> Any:
        """pygls' structure_message, but a bad message costs one log line, not a traceback."""
        if "jsonrpc" not in data:
            return data
        method = data.get("method", "")
        try:
            if "id" in data:
                if "error" in data:
                    return self._converter.structure(data, types.ResponseErrorMessage)
                if "method" in data:
                    kind = self.get_message_type(method) or JsonRPCRequestMessage
                    return self._converter.structure(data, kind)
                kind = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
                return self._converter.structure(data, kind)
            kind = self.get_message_type(method) or JsonRPCNotification
            return self._converter.structure(data, kind)
        except ClassValidationError as e:
            log.warning("ignored a malformed %s message: %s", method or "response", _summary(e))
            raise JsonRpcInvalidParams() from None
        except Exception as e:
            log.warning("ignored a malformed %s message: %s", method or "response", e)
            raise JsonRpcInternalError() from None

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
        if self.initialized:
            raise RpcError(INVALID_REQUEST, ALREADY_INITIALIZED)
        result = yield from super().lsp_initialize(params)
        self.initialized = True
        return result

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(
        self, params: types.DidChangeTextDocumentParams
    ) -> Generator[Any, Any, None]:
        uri = params.text_document.uri
        if unquote(uri) not in self.workspace.text_documents:
            log.warning("ignored textDocument/didChange for %s, which is not open", uri)
            return
        yield from super().lsp_text_document__did_change(params)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args: Any) -> Generator[Any, Any, None]:
        # An `exit` that arrives while shutdown is still closing the engine is an orderly exit.
        self.shutdown_requested = True
        yield from super().lsp_shutdown(*args)

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Generator[Any, Any, None]:
        if (user_handler := self.fm.features.get(types.EXIT)) is not None:
            yield user_handler, args, None
        self.exit_code = 0 if self._shutdown or self.shutdown_requested else 1
        self.exit_event.set()


def _summary(e: ClassValidationError) -> str:
    """One line for a cattrs validation error: its leaf messages, without the traceback."""
    leaves: list[str] = []

    def walk(x: BaseException) -> None:
        subs = getattr(x, "exceptions", None)
        if subs:
            for sub in subs:
                walk(sub)
        else:
            leaves.append(f"{type(x).__name__}: {x}")

    walk(e)
    return "; ".join(leaves[:4]) or str(e)
