"""The engine's HTTP side of a vLLM server: request bodies, tokenizer endpoints, streams, metrics.

The engine renders prompts itself (generate.py renders, counts for an honest context check, then
generates), so everything goes through vLLM's tokenizer: /tokenize with messages applies the
model's own chat template, /detokenize turns those ids into the prompt text, and the ids are kept
so that the completion is sent as exactly the tokens that were counted.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from engine.errors import GenerationFailed, IngotError, InvalidRequest, RemoteUnavailable
from engine.generation import Constraint, GenerationRequest

# httpx logs every request at INFO: one line per tokenize/detokenize/generate call would flood the
# engine's log (and its stderr in stdio mode).
logging.getLogger("httpx2").setLevel(logging.WARNING)
# Prompts rendered or counted recently, with their token ids (a chat is rendered, counted and
# generated within one request; a few dozen cover many concurrent ones).
TOKEN_CACHE_SIZE = 64
# A remote deployment: connecting is quick or it is down; a stream that sends nothing for this
# long has stalled (vLLM sends a chunk per token, usage included). INGOT_REMOTE_READ_TIMEOUT_S
# raises it for deployments whose queue can hold a request longer.
REMOTE_CONNECT_TIMEOUT_S = 5.0
REMOTE_READ_TIMEOUT_S = 120.0
HEALTH_TIMEOUT_S = 3.0
STRUCTURED_FIELD = {"json_schema": "json", "regex": "regex", "lark_grammar": "grammar"}
# vLLM's gauges and counters worth folding into Ingot's telemetry, by their exported names.
METRICS = {
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:prompt_tokens_total": "prompt_tokens_total",
    "vllm:generation_tokens_total": "generation_tokens_total",
    "vllm:num_preemptions_total": "preemptions_total",
    "vllm:prefix_cache_queries_total": "prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits_total",
    "vllm:request_success_total": "requests_finished_total",
}


def structured_outputs(constraint: Constraint | None) -> dict[str, Any] | None:
    if constraint is None:
        return None
    field = STRUCTURED_FIELD[constraint.kind]
    if field == "json":
        try:
            return {"json": json.loads(constraint.text)}
        except ValueError as e:
            raise InvalidRequest(f"The JSON schema is not valid JSON: {e}.") from e
    return {field: constraint.text}


def completion_body(
    request: GenerationRequest,
    *,
    model: str,
    prompt: str | list[int],
    max_tokens: int,
) -> dict[str, Any]:
    """A /v1/completions request for vLLM 0.32 from Ingot's sampling settings and constraint.

    Stop sequences stay with the engine's StopMatcher (it holds back partial matches the same way
    for every runtime); unset values are left out so that vLLM applies the model's generation
    config, as Ingot's "None = the model's default" means."""
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        # Usage on every chunk: the completion token count Ingot reports with each delta.
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        # Rendered chat prompts already hold their special tokens.
        "add_special_tokens": not isinstance(prompt, list),
        # Lower runs first, as in Ingot's scheduler (the server runs with priority scheduling).
        "priority": request.priority,
    }
    for name, value in (
        ("temperature", p.temperature),
        ("top_p", p.top_p),
        ("top_k", p.top_k),
        ("seed", p.seed),
        ("repetition_penalty", p.repetition_penalty),
    ):
        if value is not None:
            body[name] = value
    if (so := structured_outputs(request.constraint)) is not None:
        body["structured_outputs"] = so
    return body


def tokenize_chat_body(model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": model, "messages": messages, "add_generation_prompt": True}


def tokenize_body(model: str, text: str) -> dict[str, Any]:
    # As /v1/completions tokenizes a text prompt: with the tokenizer's special tokens.
    return {"model": model, "prompt": text, "add_special_tokens": True}


def detokenize_body(model: str, tokens: list[int]) -> dict[str, Any]:
    return {"model": model, "tokens": tokens}


def parse_metrics(text: str) -> dict[str, float]:
    """The Prometheus text from /metrics, summed over label sets, under Ingot's names."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        key = METRICS.get(name)
        if key is None:
            continue
        try:
            out[key] = out.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return out


def error_message(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def describe_http_error(e: Exception) -> str:
    """What went wrong talking to a server, in words (some httpx errors have an empty str)."""
    if isinstance(e, httpx.TimeoutException):
        if isinstance(e, httpx.ConnectTimeout):
            return "connecting timed out"
        if isinstance(e, httpx.ReadTimeout):
            return "it sent nothing within the read timeout"
        return "it timed out"
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def remote_read_timeout() -> float:
    try:
        value = float(os.environ.get("INGOT_REMOTE_READ_TIMEOUT_S", ""))
    except ValueError:
        return REMOTE_READ_TIMEOUT_S
    return value if value > 0 else REMOTE_READ_TIMEOUT_S


def unreachable_hint(url: str) -> str:
    return (
        f"Check that the deployment is up and reachable from this machine (`curl {url}/health`); "
        "Ingot tries it again on the next request."
    )


@dataclass(frozen=True)
class StreamChunk:
    text: str
    completion_tokens: int | None
    prompt_tokens: int | None
    finish_reason: str | None
    cached_tokens: int | None = None  # prompt tokens vLLM's prefix cache served


class VllmClient:
    """Talks to one vLLM server (a local child or a remote deployment) by URL."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        headers: Mapping[str, str] | None = None,
        local: bool,
        transport: httpx.AsyncBaseTransport | None = None,
        read_timeout_s: float | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.local = local
        if local:
            # Streams last as long as generations do; only connecting is bounded.
            timeout = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None)
        else:
            # A deployment elsewhere can vanish or stall: every read is bounded too.
            timeout = httpx.Timeout(
                connect=REMOTE_CONNECT_TIMEOUT_S,
                read=read_timeout_s or remote_read_timeout(),
                write=30.0,
                pool=None,
            )
        self.http = httpx.AsyncClient(
            base_url=self.url,
            headers=dict(headers or {}),
            timeout=timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            # A proxy from the environment must never sit between the engine and its own child.
            trust_env=not local,
            transport=transport,
        )
        self._tokens: OrderedDict[str, list[int]] = OrderedDict()

    async def close(self) -> None:
        await self.http.aclose()

    def _remember(self, text: str, tokens: list[int]) -> None:
        self._tokens[text] = tokens
        self._tokens.move_to_end(text)
        while len(self._tokens) > TOKEN_CACHE_SIZE:
            self._tokens.popitem(last=False)

    def cached_tokens(self, text: str) -> list[int] | None:
        return self._tokens.get(text)

    def _unreachable(self, what: str, e: Exception) -> IngotError:
        if self.local:
            return GenerationFailed(f"vLLM at {self.url} did not answer {what}: {e}")
        return RemoteUnavailable(
            f"The vLLM deployment at {self.url} did not answer {what}: {describe_http_error(e)}.",
            hint=unreachable_hint(self.url),
            url=self.url,
        )

    def _refused(self, what: str, status: int, msg: str) -> IngotError:
        """An HTTP error answer: the request's own fault (400), or the server's."""
        if status == 400:
            return InvalidRequest(f"vLLM refused the request: {msg}")
        if not self.local and status in (401, 403):
            return RemoteUnavailable(
                f"The vLLM deployment at {self.url} refused Ingot's API key ({status}: {msg}).",
                hint="Attach it again with the key it was started with "
                "(`ingot model attach URL --api-key ...`).",
                url=self.url,
                status=status,
            )
        if not self.local and status in (502, 503, 504):
            return RemoteUnavailable(
                f"The vLLM deployment at {self.url} answered {what} with {status}: {msg}",
                hint=unreachable_hint(self.url),
                url=self.url,
                status=status,
            )
        return GenerationFailed(f"vLLM answered {what} with {status}: {msg}")

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            r = await self.http.post(path, json=body)
        except httpx.HTTPError as e:
            raise self._unreachable(path, e) from e
        if r.status_code >= 400:
            raise self._refused(path, r.status_code, error_message(r.status_code, r.content))
        return r.json()

    async def health(self) -> str | None:
        """None when /health answers 200 (vLLM leaves it open), else why it did not."""
        try:
            r = await self.http.get("/health", timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as e:
            return describe_http_error(e)
        return None if r.status_code == 200 else f"/health answered HTTP {r.status_code}"

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The model's own chat template applied by vLLM, as text (its ids are remembered)."""
        tok = await self._post("/tokenize", tokenize_chat_body(self.model, messages))
        tokens = [int(t) for t in tok["tokens"]]
        text = str((await self._post("/detokenize", detokenize_body(self.model, tokens)))["prompt"])
        self._remember(text, tokens)
        return text

    async def tokenize(self, text: str) -> list[int]:
        if (known := self._tokens.get(text)) is not None:
            return known
        tok = await self._post("/tokenize", tokenize_body(self.model, text))
        tokens = [int(t) for t in tok["tokens"]]
        self._remember(text, tokens)
        return tokens

    async def models(self) -> list[dict[str, Any]]:
        r = await self.http.get("/v1/models")
        r.raise_for_status()
        data = r.json().get("data", [])
        return [m for m in data if isinstance(m, dict)]

    async def metrics(self) -> dict[str, float]:
        r = await self.http.get("/metrics")
        r.raise_for_status()
        return parse_metrics(r.text)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """The chunks of one streamed completion. Leaving the iteration early closes the HTTP
        stream, and vLLM aborts the request when its client goes away."""
        try:
            async with self.http.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code >= 400:
                    msg = error_message(r.status_code, await r.aread())
                    raise self._refused("/v1/completions", r.status_code, msg)
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise GenerationFailed(f"vLLM: {error_message(500, data.encode())}")
                    usage = chunk.get("usage") or {}
                    choices = chunk.get("choices") or [{}]
                    details = usage.get("prompt_tokens_details")
                    cached = details.get("cached_tokens") if isinstance(details, dict) else None
                    yield StreamChunk(
                        text=str(choices[0].get("text") or ""),
                        completion_tokens=usage.get("completion_tokens"),
                        prompt_tokens=usage.get("prompt_tokens"),
                        finish_reason=choices[0].get("finish_reason"),
                        cached_tokens=cached if isinstance(cached, int) else None,
                    )
        except httpx.HTTPError as e:
            if not self.local:
                raise RemoteUnavailable(
                    f"The stream from the vLLM deployment at {self.url} broke: "
                    f"{describe_http_error(e)}.",
                    hint=unreachable_hint(self.url),
                    url=self.url,
                ) from e
            raise GenerationFailed(f"The stream from vLLM at {self.url} broke: {e}") from e


async def probe_deployment(
    url: str, headers: Mapping[str, str], *, transport: httpx.AsyncBaseTransport | None = None
) -> Any:
    """/health, then /v1/models with the key: the models' JSON, or RemoteUnavailable whose
    `data["reason"]` says what failed: `unreachable`, `unauthorized` or `not_vllm`."""
    client = VllmClient(url, "", headers=headers, local=False, transport=transport)
    try:
        try:
            # vLLM answers /health without a key; a proxy in front may not have it (404): fine.
            await client.http.get("/health", timeout=HEALTH_TIMEOUT_S * 2)
            r = await client.http.get("/v1/models")
        except httpx.HTTPError as e:
            raise RemoteUnavailable(
                f"Nothing answered at {url} ({describe_http_error(e)}).",
                hint="Check the URL (scheme, host and port) and that the deployment is up: "
                f"`curl {url}/health` from this machine.",
                reason="unreachable",
            ) from None
        if r.status_code in (401, 403):
            given = "the API key given" if "Authorization" in headers else "no API key"
            raise RemoteUnavailable(
                f"The deployment at {url} refused {given} (HTTP {r.status_code}).",
                hint="Give the key it was started with (vLLM's --api-key) with --api-key, or "
                "--api-key-env naming a variable of the engine that holds it.",
                reason="unauthorized",
            )
        if r.status_code >= 400:
            raise RemoteUnavailable(
                f"{url}/v1/models answered HTTP {r.status_code}: "
                f"{error_message(r.status_code, r.content)[:300]}",
                hint="Check that the URL is a vLLM OpenAI server's base URL (no path after "
                "the port unless a proxy adds one).",
                reason="not_vllm",
            )
        try:
            return r.json()
        except ValueError:
            raise RemoteUnavailable(
                f"{url}/v1/models did not answer JSON.",
                hint="Check that the URL is a vLLM OpenAI server's base URL.",
                reason="not_vllm",
            ) from None
    finally:
        await client.close()
