"""What the REST server lets in: Host names (DNS-rebinding protection), browser origins (CORS),
cross-site callers on state-changing routes (CSRF), the API key, the home secret on management and
native routes, request body type and size, and JSON bodies that are safe to hand to the handlers."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from server.rest.errors import ApiError, bad_request
from server.rest.settings import RestSettings, is_loopback
from server.secret import HEADER as SECRET_HEADER
from server.secret import SECRET_FILE

MAX_DEPTH = 64
OPEN_PATHS = frozenset({"/health"})
SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
# Sec-Fetch-Site values of a request a web page made to a site other than this server.
OTHER_SITE = frozenset({"cross-site", "same-site"})
F = TypeVar("F", bound=Callable[..., Any])
# Routes any local tool may call without the home secret (with an API key set, they need the key).
OPENAI_PREFIX = "/v1/"
SECRET_PREFIX = "/ingot/"
# Whether the request being handled proved the home secret or the API key. Set by the guard for
# the handler's task; rest_priority reads it (only trusted callers may ask for `interactive`).
TRUSTED_CALLER: ContextVar[bool] = ContextVar("ingot_trusted_caller", default=False)
# Whether it proved the home secret itself, which only the engine's own user can read (an API
# key may be held by a tool on another machine).
SECRET_CALLER: ContextVar[bool] = ContextVar("ingot_secret_caller", default=False)


def changes_state(handler: F) -> F:
    """Marks a GET handler that changes the engine's state (Foundry's load/unload routes), so the
    guard treats it like a POST: a web page's <img src> or link must not reach it."""
    handler.changes_state = True  # type: ignore[attr-defined]
    return handler


def _changes_state(request: web.Request) -> bool:
    if request.method not in SAFE_METHODS:
        return True
    return bool(getattr(request.match_info.handler, "changes_state", False))


def needs_secret(request: web.Request) -> bool:
    """Ingot's own routes (management and native generation) and Foundry's state-changing ones;
    the OpenAI routes, /health, /metrics and Foundry's read-only routes stay open on loopback."""
    path = request.path
    if path.startswith(SECRET_PREFIX):
        return True
    if path.startswith(OPENAI_PREFIX) or path in OPEN_PATHS:
        return False
    return _changes_state(request)


def _bearer(request: web.Request) -> str:
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _hostname(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):  # [::1]:port
        return h[1 : h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


class Guard:
    """The checks every request passes before a handler runs."""

    def __init__(self, settings: RestSettings, extra_hosts: Iterable[str] = ()) -> None:
        self.settings = settings
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = {h.lower().strip("[]") for h in (*settings.allowed_hosts, *extra_hosts)}
        self.any_origin = "*" in settings.cors_origins
        self.origins = {o.rstrip("/") for o in settings.cors_origins}

    def allow_host(self, name: str) -> None:
        self.hosts.add(name.lower().strip("[]"))

    def host_ok(self, request: web.Request) -> bool:
        if self.any_host:
            return True
        raw = request.headers.get(hdrs.HOST)
        if not raw:
            return False
        name = _hostname(raw)
        return is_loopback(name) or name in self.hosts

    def origin_ok(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins

    def secret_proven(self, request: web.Request) -> bool:
        """The request carries the home secret (`X-Ingot-Secret`, or `Authorization: Bearer`)."""
        secret = self.settings.secret
        if secret is None:
            return False
        given = request.headers.get(SECRET_HEADER, "").strip() or _bearer(request)
        return bool(given) and secret.matches(given)

    def key_error(self, request: web.Request) -> ApiError | None:
        key = self.settings.api_key
        if not key or request.path in OPEN_PATHS:
            return None
        given = _bearer(request)
        given = given or request.headers.get("api-key", "") or request.headers.get("x-api-key", "")
        if not given:
            return ApiError(
                401,
                "Missing API key. Send it as `Authorization: Bearer <key>` "
                "(the openai SDKs do this with api_key=...).",
                type="authentication_error",
                code="invalid_api_key",
            )
        if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8")):
            return ApiError(
                401,
                "Incorrect API key. Use the key the server was started with.",
                type="authentication_error",
                code="invalid_api_key",
            )
        return None

    def secret_error(self, request: web.Request) -> ApiError:
        """The 401 for a protected route called without the home secret (and without the API
        key, when the server has one)."""
        secret = self.settings.secret
        where = str(secret.path) if secret is not None else f"<Ingot home>/{SECRET_FILE}"
        given = request.headers.get(SECRET_HEADER, "").strip() or _bearer(request)
        what = "a wrong one" if given else "none"
        hint = (
            f"The secret is in {where} (readable only by you); the `ingot` CLI sends it for you. "
            f"Other tools send it as `{SECRET_HEADER}: <secret>`, e.g. curl -H "
            f'"{SECRET_HEADER}: $(cat {where})".'
        )
        if secret is None:
            hint = "This server was started without an Ingot home, so it has no secret to check."
        return ApiError(
            401,
            f"{request.method} {request.path[:100]} needs this Ingot home's secret (management, "
            f"native and state-changing routes do) and the request carries {what}. {hint}",
            type="authentication_error",
            code="invalid_secret",
            ingot={"kind": "unauthorized", "hint": hint},
        )

    def cross_site_error(self, request: web.Request) -> ApiError | None:
        """A state-changing request a web page made from another site. Browsers mark what they send
        with Sec-Fetch-* (tools such as curl and the SDKs send none); an <img> or a link carries no
        Origin, so the Origin check alone would let it through."""
        site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        mode = request.headers.get("Sec-Fetch-Mode", "").strip().lower()
        origin = request.headers.get(hdrs.ORIGIN)
        referer = request.headers.get(hdrs.REFERER, "").strip()
        if mode == "no-cors":
            why = "a web page's no-cors request (an image, script or form)"
        elif site in OTHER_SITE and not (origin is not None and self.origin_ok(origin)):
            why = f"a web page on another site (Sec-Fetch-Site: {site})"
        elif referer and not self.referer_ok(request, referer):
            # Browsers without Sec-Fetch-* (older Safari) still send the page in Referer; tools
            # send none, so only a page of another site is refused here.
            why = f"a web page on another site (Referer: {referer[:100]})"
        else:
            return None
        return ApiError(
            403,
            f"{request.method} {request.path[:100]} changes the engine's state and was sent by "
            f"{why}; it is refused. Call it from a tool (curl, an SDK, the ingot CLI), or from a "
            "page whose origin the server allows (--cors-origin) with fetch in cors mode.",
            code="cross_site_request",
        )

    def referer_ok(self, request: web.Request, referer: str) -> bool:
        """Whether the page in `referer` is this server's own (on a loopback name, at this
        server's port) or of an allowed origin."""
        try:
            parts = urlsplit(referer)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            return False  # no valid URL: no page of this server either
        if not parts.scheme or not parts.hostname:
            return False
        if self.origin_ok(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"):
            return True
        return is_loopback(parts.hostname) and port == request.url.port

    def media_type_error(self, request: web.Request) -> ApiError | None:
        """A body that is not declared JSON: browsers send text/plain and form bodies cross-site
        without asking first, so only JSON (which needs a CORS preflight) may change state."""
        declared = request.headers.get(hdrs.CONTENT_TYPE)
        length = request.content_length
        if length == 0 or (length is None and not request.body_exists):
            return None  # a bare POST (curl -X POST): nothing to parse, whatever its label
        if declared is not None and _is_json(declared):
            return None
        return ApiError(
            415,
            f"The request body must be JSON, sent with Content-Type: application/json (got "
            f"{(declared or 'none')[:100]!r}). With curl, add -H 'Content-Type: application/json'.",
            code="unsupported_media_type",
        )

    def cors_headers(self, origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": "*" if self.any_origin else origin,
            "Access-Control-Expose-Headers": "Retry-After, X-Request-Id",
            "Vary": "Origin",
        }

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_ok(request):
            raise ApiError(
                403,
                f"Host '{request.headers.get(hdrs.HOST, '')[:100]}' is not allowed. Use "
                "127.0.0.1 or localhost, or start the server with the name in --allowed-host.",
                code="host_not_allowed",
            )
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:
            # Browsers send Origin on cross-site requests: without an allowed origin a web page
            # could drive the local engine (CSRF), so refuse instead of only hiding the answer.
            if not self.origin_ok(origin):
                raise ApiError(
                    403,
                    f"Origin '{origin[:100]}' is not allowed. Start the server with "
                    "--cors-origin to let a web page use it.",
                    code="origin_not_allowed",
                )
            if request.method == hdrs.METH_OPTIONS:
                asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "")
                return web.Response(
                    status=204,
                    headers={
                        **self.cors_headers(origin),
                        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                        "Access-Control-Allow-Headers": asked or "Authorization, Content-Type",
                        "Access-Control-Max-Age": "600",
                    },
                )
        if _changes_state(request):
            if (err := self.cross_site_error(request)) is not None:
                raise err
            if request.method not in SAFE_METHODS and (err := self.media_type_error(request)):
                raise err
        # With an API key, the key guards every route (tools on the network cannot read the
        # home's secret); without one, Ingot's own routes need the secret, even on loopback.
        if (err := self.key_error(request)) is not None:
            raise err
        key_ok = bool(self.settings.api_key) and request.path not in OPEN_PATHS
        proven = self.secret_proven(request)
        secret_ok = not key_ok and proven
        if needs_secret(request) and not (secret_ok or key_ok):
            raise self.secret_error(request)
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise too_large(self.settings.max_body_bytes)
        if request.body_exists and (slow := await self._read_body(request)) is not None:
            return slow
        token = TRUSTED_CALLER.set(secret_ok or key_ok)
        own = SECRET_CALLER.set(proven)
        try:
            return await handler(request)
        finally:
            SECRET_CALLER.reset(own)
            TRUSTED_CALLER.reset(token)

    async def _read_body(self, request: web.Request) -> web.Response | None:
        """Read the body now, within the read timeout (aiohttp keeps it for the handler), so a
        client that trickles or stops sending cannot hold a connection and a handler for long.
        Returns the 408 answer for such a client."""
        limit = self.settings.read_timeout_s
        try:
            async with asyncio.timeout(limit):
                await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(self.settings.max_body_bytes) from None
        except TimeoutError:
            response = ApiError(
                408,
                f"The request body did not arrive within {limit:g} s. Send the whole body at once.",
                code="request_timeout",
            ).response()
            response.force_close()  # the rest of the body may still come: do not read it
            return response
        return None

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and self.origin_ok(origin):
            response.headers.update(self.cors_headers(origin))


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than {limit} bytes.",
        code="request_too_large",
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_tree(data: Any) -> None:
    """Walk the parsed body without recursion: refuse deep nesting (it would exhaust the stack
    further on) and lone surrogates (they cannot be encoded for the tokenizer)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"The JSON body is nested deeper than {MAX_DEPTH} levels.")
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    raise bad_request(
                        f"{path or 'body'} contains a lone UTF-16 surrogate (invalid Unicode).",
                        param=path or None,
                    ) from None
        elif isinstance(node, dict):
            for k, v in node.items():
                stack.append((k, depth + 1, path))
                stack.append((v, depth + 1, f"{path}.{k}" if path else str(k)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(node))


async def read_json(
    request: web.Request, *, limit: int, allow_empty: bool = False
) -> dict[str, Any]:
    """The body as a JSON object, or an ApiError (400 / 413) that says what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise bad_request(f"The JSON body is nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as e:
        raise bad_request(
            f"The request body is not valid JSON: {str(e)[:200]}.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    _check_tree(data)
    return data
