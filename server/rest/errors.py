"""Every failure as OpenAI-shaped JSON with the right status: engine errors, validation errors,
aiohttp's own HTTP errors, and a catch-all that answers 500 without leaking a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from engine.errors import IngotError
from protocol.errors import error_for
from protocol.openai import ErrorDetail, ErrorResponse
from server.translate import clip, error_payload, input_error

log = logging.getLogger("ingot.rest")


class ApiError(Exception):
    """An error answer decided by the REST layer itself (bad body, missing key, wrong host...)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        ingot: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.ingot = ingot

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(
            message=self.message, type=self.type, param=self.param, code=self.code, ingot=self.ingot
        )
        return ErrorResponse(error=detail).model_dump(mode="json", exclude_none=False)

    def response(self) -> web.Response:
        body = self.body()
        if self.ingot is None:
            body["error"].pop("ingot", None)
        return web.json_response(body, status=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_ingot(e: IngotError) -> ApiError:
    if e.kind == "generation_failed" and "Error creating grammar" in e.message:
        # The runtime rejected the request's own JSON schema (response_format or a tool's
        # parameters): bad input, so a 400, not a server error.
        detail = e.message.split("Error creating grammar:", 1)[1].strip()
        return ApiError(
            400,
            f"The JSON schema in response_format or tools cannot be used: {detail}",
            code="invalid_schema",
            ingot={**error_payload(e), "kind": "invalid_request"},
        )
    spec = error_for(e.kind)
    param = e.data.get("param") or ("model" if "model" in e.kind else None)
    headers: dict[str, str] = {}
    if spec.http_status in (429, 503):
        # The official SDKs honour Retry-After before retrying.
        headers["Retry-After"] = str(int(e.data.get("retry_after_s") or 1))
    payload = {k: clip(v) if isinstance(v, str) else v for k, v in error_payload(e).items()}
    return ApiError(
        spec.http_status,
        clip(str(e)),
        type=spec.openai_type,
        code=spec.openai_code,
        param=param if isinstance(param, str) else None,
        headers=headers,
        ingot=payload,
    )


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "json-or-python"}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        elif "[" in part or part in _TYPE_TAGS or part[:1].isupper() or "-" in part:
            continue  # pydantic's union-branch labels mean nothing to an API user
        else:
            out += f".{part}"
    return out


def from_validation(e: ValidationError) -> ApiError:
    errors = e.errors(include_url=False, include_context=False, include_input=False)
    # A union field fails once per branch: say it once, with every alternative.
    by_field: dict[str, list[str]] = {}
    for x in errors:
        msgs = by_field.setdefault(_loc(tuple(x["loc"])) or "body", [])
        if x["msg"] not in msgs:
            msgs.append(x["msg"])
    parts = [f"{field}: {' or '.join(msgs)}" for field, msgs in list(by_field.items())[:3]]
    more = f" (and {len(by_field) - 3} more)" if len(by_field) > 3 else ""
    first = next(iter(by_field), "body")
    return ApiError(
        400,
        "Invalid request: " + "; ".join(parts) + more,
        param=None if first == "body" else first,
    )


_HTTP_CODES = {
    404: ("not_found", "No such route: {method} {path}. See docs/rest.md for the routes."),
    405: ("method_not_allowed", "{method} is not allowed on {path}."),
    413: ("request_too_large", "The request body is larger than the server accepts."),
}


def from_http(e: web.HTTPException, request: web.Request) -> ApiError:
    code, template = _HTTP_CODES.get(e.status, ("http_error", e.reason or "HTTP error"))
    message = template.format(method=request.method, path=request.path)
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else {}
    return ApiError(e.status, message, code=code, headers=headers)


def internal_error(exc: BaseException) -> ApiError:
    return ApiError(
        500,
        f"Internal error ({type(exc).__name__}). The server log has the details.",
        type="server_error",
        code="internal",
    )


def to_api_error(exc: BaseException, request: web.Request) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if (refused := input_error(exc)) is not None:
        exc = refused
    if isinstance(exc, IngotError):
        return from_ingot(exc)
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    if isinstance(exc, web.HTTPException):
        return from_http(exc, request)
    log.error(
        "unexpected error in %s %s", request.method, request.path, exc_info=exc
    )  # traceback to stderr only, never into the response
    return internal_error(exc)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return to_api_error(e, request).response()
    except (ConnectionResetError, BrokenPipeError):
        raise  # the client left; there is no one to answer
    except Exception as e:
        return to_api_error(e, request).response()


def sse_error_data(exc: BaseException, request: web.Request) -> str:
    """The error envelope as one SSE `data:` payload (for failures after a stream has started)."""
    return json.dumps(to_api_error(exc, request).body())
