"""HttpClient: the running service's REST API (management routes, SSE progress, OpenAI chat)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel

from server.cli.client import (
    ChatOutcome,
    ChatTurn,
    CliError,
    EngineClient,
    ProgressReport,
    ProgressSink,
    RemoteError,
    TextSink,
)
from server.service_http import (
    auth_headers,
    idle_timeout,
    quick_timeout,
    read_events,
    stalled,
)

if TYPE_CHECKING:
    from protocol.jsonrpc import models as m
    from protocol.jsonrpc.embeddings import EmbedParams, EmbedResult
    from protocol.jsonrpc.remotes import RemoteAttachParams, RemoteInfo, RemoteListResult
    from protocol.jsonrpc.service import ServiceStatus
    from server.secret import HomeSecret

M = TypeVar("M", bound=BaseModel)

API = "/ingot/v1"


def api_key_headers() -> dict[str, str]:
    return auth_headers(None, os.environ.get("INGOT_API_KEY"))


def remote_error(status: int, body: Any) -> RemoteError:
    """The OpenAI-shaped error body as an IngotError (message, hint and kind preserved)."""
    err: Any = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        text = json.dumps(body)[:300] if body is not None else ""
        return RemoteError(
            f"The service answered HTTP {status}. {text}".strip(),
            kind="internal",
            hint="`ingot service logs` shows what happened.",
            status=status,
        )
    extra: dict[str, Any] = err["ingot"] if isinstance(err.get("ingot"), dict) else {}
    message = str(err.get("message") or f"HTTP {status}")
    hint = extra.get("hint")
    # The REST layer renders "message hint" into `message`; print the hint once, on its own line.
    if isinstance(hint, str) and hint and message.endswith(hint):
        message = message[: -len(hint)].rstrip()
    return RemoteError(
        message,
        kind=str(extra.get("kind") or err.get("code") or "internal"),
        hint=hint if isinstance(hint, str) else None,
        status=status,
    )


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream; `event` is "message" when unnamed."""
    async for item in read_events(resp.content):
        yield item


# Routes the service answers promptly whatever it is doing; everything else may work for minutes.
QUICK_PATHS = (
    "/catalog",
    "/models/",
    "/status",
    "/hardware",
    "/cache",
    "/telemetry/",
    "/remotes",
    "/v1/models",
)


class HttpClient(EngineClient):
    """`secret`: the home's secret, for the service that owns the home (found and checked by
    `find_service`); None for any other server (`ingot bench --compare`), which must never get it."""

    def __init__(self, url: str, secret: HomeSecret | None = None) -> None:
        self.where = url.rstrip("/")
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout (downloads, compiles and loads legitimately take minutes); an idle
            # limit between reads instead, tighter on the routes that always answer at once.
            headers = auth_headers(self._secret, os.environ.get("INGOT_API_KEY"))
            self._session = aiohttp.ClientSession(timeout=idle_timeout(), headers=headers)
        return self._session

    def _unreachable(self, e: Exception) -> CliError:
        if stalled(e):
            return CliError(
                f"The Ingot service at {self.where} stopped answering (nothing came within the "
                "read timeout).",
                hint="`ingot service logs` shows what it is doing; `ingot service restart` "
                "restarts it. For very long silent steps, raise INGOT_CLIENT_IDLE_TIMEOUT_S.",
            )
        if isinstance(e, ValueError):  # EventTooLarge, or an event that is not JSON
            return CliError(
                f"The service at {self.where} sent a stream Ingot cannot read ({str(e)[:200]}).",
                hint="`ingot service logs` shows what happened.",
            )
        return CliError(
            f"Cannot reach the Ingot service at {self.where} ({type(e).__name__}: {e}).",
            hint="`ingot service status` checks it; `ingot service restart` restarts it.",
        )

    async def _request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        quick = method == "GET" and path.removeprefix(API).startswith(QUICK_PATHS)
        timeout = quick_timeout() if quick else idle_timeout()
        try:
            async with self._http().request(
                method, self.where + path, json=json_body, params=params, timeout=timeout
            ) as resp:
                body: Any
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                if resp.status >= 400:
                    raise remote_error(resp.status, body)
                return body
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise self._unreachable(e) from e

    async def _get(self, model: type[M], path: str, params: dict[str, str] | None = None) -> M:
        return model.model_validate(await self._request("GET", path, params=params))

    async def _post(self, model: type[M], path: str, body: Any = None) -> M:
        return model.model_validate(await self._request("POST", path, json_body=body))

    async def _stream_operation(
        self, path: str, body: Any, progress: ProgressSink, result: type[M]
    ) -> M:
        """A long operation streamed as SSE (download, compile, import, verify); `done` holds a
        `result` (default ModelInfo). Cancelling the calling task closes the connection, which
        the service takes as a cancel."""
        try:
            async with self._http().post(self.where + path, json=body) as resp:
                if resp.status >= 400:
                    try:
                        err = await resp.json(content_type=None)
                    except ValueError:
                        err = None
                    raise remote_error(resp.status, err)
                async for event, data in sse_events(resp):
                    payload = json.loads(data)
                    if event == "progress":
                        progress(
                            ProgressReport(
                                stage=str(payload.get("stage", "")),
                                message=str(payload.get("message", "")),
                                fraction=payload.get("fraction"),
                                bytes_done=payload.get("bytesDone"),
                                bytes_total=payload.get("bytesTotal"),
                                file=payload.get("file"),
                            )
                        )
                    elif event == "done":
                        return result.model_validate(payload)
                    elif event == "error":
                        raise remote_error(500, payload)
        except (aiohttp.ClientConnectionError, TimeoutError, ValueError) as e:
            raise self._unreachable(e) from e
        raise CliError(
            f"The service closed the {path} stream before it finished.",
            hint="`ingot service logs` shows what happened; run the command again to resume.",
        )

    @staticmethod
    def _model_path(model: str) -> str:
        return f"{API}/models/{quote(model, safe='')}"

    # -- EngineClient ----------------------------------------------------------------------------
    async def catalog(self, params: m.CatalogListParams) -> m.CatalogListResult:
        from protocol.jsonrpc import models as m

        q = {
            k: v
            for k, v in {
                "device": params.device,
                "task": params.task,
                "runtime": params.runtime,
                "cachedOnly": "true" if params.cached_only else None,
                "fitsOnly": "true" if params.fits_only else None,
                "includeAll": "true" if params.include_all else None,
            }.items()
            if v
        }
        return await self._get(m.CatalogListResult, f"{API}/catalog", q)

    async def model_info(self, model: str) -> m.ModelInfo:
        from protocol.jsonrpc import models as m

        return await self._get(m.ModelInfo, self._model_path(model))

    async def download(self, model: str, progress: ProgressSink) -> m.ModelInfo:
        from protocol.jsonrpc import models as m

        return await self._stream_operation(
            self._model_path(model) + "/download", None, progress, m.ModelInfo
        )

    async def load(self, model: str, ttl: float | None, progress: ProgressSink) -> m.ModelInfo:
        from protocol.jsonrpc import models as m

        return await self._post(m.ModelInfo, self._model_path(model) + "/load", {"ttl": ttl})

    async def unload(self, model: str, force: bool) -> m.ModelUnloadResult:
        from protocol.jsonrpc import models as m

        return await self._post(
            m.ModelUnloadResult, self._model_path(model) + "/unload", {"force": force}
        )

    async def delete(self, model: str) -> m.ModelDeleteResult:
        from protocol.jsonrpc import models as m

        return m.ModelDeleteResult.model_validate(
            await self._request("DELETE", self._model_path(model))
        )

    async def register(self, params: m.ModelRegisterParams) -> m.ModelInfo:
        from protocol.jsonrpc import models as m

        body = params.model_dump(mode="json", by_alias=True, exclude_none=True)
        return await self._post(m.ModelInfo, f"{API}/models/register", body)

    async def compile(self, params: m.ModelCompileParams, progress: ProgressSink) -> m.ModelInfo:
        from protocol.jsonrpc import models as m

        body = params.model_dump(mode="json", by_alias=True, exclude_none=True)
        return await self._stream_operation(f"{API}/models/compile", body, progress, m.ModelInfo)

    async def import_gguf(self, params: m.ModelImportParams, progress: ProgressSink) -> m.ModelInfo:
        from protocol.jsonrpc import models as m

        body = params.model_dump(mode="json", by_alias=True, exclude_none=True)
        return await self._stream_operation(f"{API}/models/import", body, progress, m.ModelInfo)

    async def verify_fidelity(self, model: str, progress: ProgressSink) -> m.FidelityResult:
        from protocol.jsonrpc import models as m

        path = f"{self._model_path(model)}/verify"
        return await self._stream_operation(path, {}, progress, result=m.FidelityResult)

    async def cache_info(self) -> m.CacheInfoResult:
        from protocol.jsonrpc import models as m

        return await self._get(m.CacheInfoResult, f"{API}/cache")

    async def cache_move(self, path: str) -> m.CacheInfoResult:
        from protocol.jsonrpc import models as m

        return await self._post(m.CacheInfoResult, f"{API}/cache/move", {"path": path})

    async def cache_verify(self, model: str | None) -> m.CacheVerifyResult:
        from protocol.jsonrpc import models as m

        body = {"model": model} if model else {}
        return await self._post(m.CacheVerifyResult, f"{API}/cache/verify", body)

    async def embed(self, params: EmbedParams) -> EmbedResult:
        from protocol.jsonrpc.embeddings import EmbedResult

        return await self._post(EmbedResult, "/ingot/v1/embed", params.dump())

    async def hardware(self) -> m.HardwareResult:
        from protocol.jsonrpc import models as m

        return await self._get(m.HardwareResult, f"{API}/hardware")

    async def status(self) -> ServiceStatus:
        from protocol.jsonrpc.service import ServiceStatus

        return await self._get(ServiceStatus, f"{API}/status")

    async def chat(self, turn: ChatTurn, on_text: TextSink) -> ChatOutcome:
        body: dict[str, Any] = {
            "model": turn.model,
            "messages": turn.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **turn.params,
        }
        if turn.ttl is not None:
            body["ttl"] = turn.ttl
        parts: list[str] = []
        finish = "stop"
        model = turn.model
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        try:
            async with self._http().post(self.where + "/v1/chat/completions", json=body) as resp:
                if resp.status >= 400:
                    try:
                        err = await resp.json(content_type=None)
                    except ValueError:
                        err = None
                    raise remote_error(resp.status, err)
                async for _, data in sse_events(resp):
                    if data.strip() == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise remote_error(500, chunk)
                    model = chunk.get("model") or model
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            parts.append(text)
                            on_text(text)
                        finish = choice.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
                    timings = (chunk.get("ingot") or {}).get("timings") or timings
        except (aiohttp.ClientConnectionError, TimeoutError, ValueError) as e:
            raise self._unreachable(e) from e
        return ChatOutcome(
            model=str(timings.get("modelId") or model),
            text="".join(parts),
            finish_reason=finish,
            prompt_tokens=int(usage.get("prompt_tokens") or timings.get("promptTokens") or 0),
            completion_tokens=int(
                usage.get("completion_tokens") or timings.get("completionTokens") or 0
            ),
            ttft_ms=timings.get("ttftMs"),
            prefill_tps=timings.get("prefillTps"),
            decode_tps=timings.get("decodeTps"),
            total_ms=timings.get("totalMs"),
        )

    async def openai_models(self) -> list[str]:
        """The ids /v1/models lists (works against any OpenAI-compatible server)."""
        res = await self._request("GET", "/v1/models")
        return [str(m["id"]) for m in res.get("data") or [] if isinstance(m, dict) and "id" in m]

    async def count_tokens(self, model: str, messages: list[dict[str, Any]]) -> int:
        """Tokens the chat template makes of `messages` (Foundry's token-count route)."""
        body = {"model": model, "messages": messages}
        res = await self._request(
            "POST", "/v1/chat/completions/tokenizer/encode/count", json_body=body
        )
        return int(res["tokenCount"])

    async def attach_remote(self, params: RemoteAttachParams) -> RemoteInfo:
        from protocol.jsonrpc.remotes import RemoteInfo

        body = params.model_dump(mode="json", by_alias=True, exclude_none=True)
        return await self._post(RemoteInfo, f"{API}/remotes", body)

    async def detach_remote(self, remote: str) -> RemoteInfo:
        from protocol.jsonrpc.remotes import RemoteInfo

        path = f"{API}/remotes/{quote(remote, safe='')}"
        return RemoteInfo.model_validate(await self._request("DELETE", path))

    async def remotes(self) -> RemoteListResult:
        from protocol.jsonrpc.remotes import RemoteListResult

        return await self._get(RemoteListResult, f"{API}/remotes")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
