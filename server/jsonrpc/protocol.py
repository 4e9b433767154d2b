"""IngotProtocol: pygls' LSP protocol with the LSP rules pygls leaves out, and quiet engine errors.

- requests before `initialize` get -32002 (pygls answers them); a second `initialize` gets -32600
  and leaves the running engine alone; so do requests after `shutdown`;
- a method that takes no params refuses params (-32602), as the others refuse unknown fields;
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
from protocol.registry import REGISTRY
from server.translate import clip, error_payload, input_error

log = logging.getLogger("ingot.jsonrpc")

SERVER_NOT_INITIALIZED = -32002
INVALID_REQUEST = -32600
ALREADY_INITIALIZED = (
    "The engine is already initialized: send `initialize` once per connection. "
    "The running engine is unchanged; start a new process for different options."
)
ALWAYS_ALLOWED = {types.INITIALIZE, types.EXIT, "$/cancelRequest", "$/setTrace"}
NO_PARAMS = frozenset(s.name for s in REGISTRY if s.kind == "request" and s.params is None)
NOTIFICATIONS = frozenset(s.name for s in REGISTRY if s.kind == "notification")


class RpcError(JsonRpcException):
    """A JSON-RPC error carrying its own code and data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message=message, code=code, data=data)
        self.code = code


def engine_error(e: IngotError) -> RpcError:
    message = f"{e.message} {e.hint}" if e.hint else e.message
    data = {k: clip(v) if isinstance(v, str) else v for k, v in error_payload(e).items()}
    return RpcError(error_for(e.kind).code, clip(message), data)


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

    def refusal(self, method: str | None, params: Any) -> types.ResponseError | None:
        """Why a message with this method is not run now (before `initialize`, after `shutdown`,
        params for a method that takes none), or None. Checked on the raw message as well as on
        the structured one, so a message whose params do not fit its type is refused alike."""
        if method is None:
            return None
        if not self.initialized and method not in ALWAYS_ALLOWED:
            return types.ResponseError(
                code=SERVER_NOT_INITIALIZED,
                message="The server is not initialized: send `initialize` first.",
            )
        if (self._shutdown or self.shutdown_requested) and method != types.EXIT:
            # LSP: requests after `shutdown` "should error with InvalidRequest".
            return types.ResponseError(
                code=INVALID_REQUEST,
                message="The server is shutting down: send `exit`, then start a new one.",
            )
        if method in NO_PARAMS and params not in (None, {}, []):
            # Like the methods that take params, which refuse unknown fields: a client that sends
            # some expects them to mean something.
            return RpcError(
                -32602, f"Invalid params: {method} takes no params.", {"fields": ["params"]}
            ).to_response_error()
        return None

    def refuse(self, msg_id: Any, error: types.ResponseError) -> None:
        """Answer a refused request (a refused notification gets no answer)."""
        if msg_id is not None:
            self._send_response(msg_id, error=error)

    def handle_message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if (error := self.refusal(method, getattr(message, "params", None))) is not None:
            self.refuse(getattr(message, "id", None), error)
            return
        super().handle_message(message)

    def cancel_request(self, params: Any) -> None:
        """`$/cancelRequest`: cancel the running request whose id is exactly `params.id` (same
        type and value); anything else names no request and is ignored."""
        msg_id = params.get("id") if isinstance(params, dict) else None
        if isinstance(msg_id, bool) or not isinstance(msg_id, int | str):
            log.warning("ignored a $/cancelRequest without an integer or string id")
            return
        for key in list(self._request_futures):
            if type(key) is type(msg_id) and key == msg_id:
                self._request_futures.pop(key).cancel()
                return
        log.debug("$/cancelRequest for %r, which is not running", msg_id)

    @staticmethod
    def is_notification(method: str) -> bool:
        """Whether `method` is a notification (LSP's or Ingot's), which must not carry an id."""
        lsp = types.METHOD_TO_TYPES.get(method)
        if lsp is not None:
            return lsp[1] is None
        return method in NOTIFICATIONS

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
        if exc is not None and (refused := input_error(exc)) is not None:
            exc = refused
        if isinstance(exc, IngotError):
            self._send_response(msg_id, error=engine_error(exc).to_response_error())
            return
        if isinstance(exc, RpcError):
            self._send_response(msg_id, error=exc.to_response_error())
            return
        if exc is not None:
            log.error("internal error in %.100s: %r", msg_id, exc, exc_info=exc)
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
