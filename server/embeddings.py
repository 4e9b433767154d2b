"""Embeddings between the wire and the engine, for every adapter: OpenAI's request and response
(`/v1/embeddings`), `ingot/embed`'s params and result, and the `dimensions` rule."""

from __future__ import annotations

from typing import Any

from engine.catalog.variant import ModelVariant
from engine.embeddings import EmbeddingRequest, EmbeddingResult
from engine.errors import InvalidRequest
from protocol.jsonrpc.embeddings import EmbedParams, EmbedResult
from protocol.openai_embeddings import EmbeddingRequest as OpenAIEmbeddingRequest
from server.translate import request_telemetry

# Fields of OpenAI's request that never change the vectors.
_HARMLESS_EXTRAS = frozenset({"user"})

Input = str | list[str] | list[int] | list[list[int]]


def engine_request(
    model: str, value: Input, *, truncate: bool = False, ttl_s: float | None = None
) -> EmbeddingRequest:
    """One input or a list of them, texts or token arrays, as the engine's request."""
    if isinstance(value, str):
        return EmbeddingRequest(model, texts=(value,), truncate=truncate, ttl_s=ttl_s)
    if value and all(isinstance(x, int) for x in value):
        row = tuple(int(x) for x in value)  # type: ignore[arg-type]
        return EmbeddingRequest(model, tokens=(row,), truncate=truncate, ttl_s=ttl_s)
    if value and all(isinstance(x, list) for x in value):
        rows = tuple(tuple(int(t) for t in x) for x in value)  # type: ignore[union-attr]
        return EmbeddingRequest(model, tokens=rows, truncate=truncate, ttl_s=ttl_s)
    return EmbeddingRequest(
        model, texts=tuple(str(x) for x in value), truncate=truncate, ttl_s=ttl_s
    )


def from_openai(req: OpenAIEmbeddingRequest) -> EmbeddingRequest:
    unknown = sorted(k for k in (req.model_extra or {}) if k not in _HARMLESS_EXTRAS)
    if unknown:
        raise InvalidRequest(
            f"Unsupported parameter(s): {', '.join(unknown)}. Ingot does not implement them and "
            "will not ignore them silently; remove them from the request.",
            param=unknown[0],
        )
    ttl = req.ttl if req.ttl is not None else req.keep_alive
    return engine_request(req.model, req.input, truncate=req.truncate, ttl_s=ttl)


def from_rpc(p: EmbedParams) -> EmbeddingRequest:
    return engine_request(p.model, p.input, truncate=p.truncate, ttl_s=p.ttl)


def native_dimensions(v: ModelVariant) -> int | None:
    dims = v.extra.get("dimensions")
    return int(dims) if isinstance(dims, int) else None


def check_dimensions(v: ModelVariant, wanted: int | None, actual: int | None = None) -> None:
    """OpenAI's `dimensions` shortens vectors of models trained for it; Ingot's models are not,
    so only their own size is accepted."""
    have = actual if actual is not None else native_dimensions(v)
    if wanted is None or have is None or wanted == have:
        return
    raise InvalidRequest(
        f"{v.id} makes {have}-dimensional vectors and cannot shorten or lengthen them "
        f"(`dimensions` is {wanted}).",
        hint=f"Remove `dimensions`, or set it to {have}.",
        param="dimensions",
        code="unsupported_dimensions",
    )


def _vectors(result: EmbeddingResult, encoding: str) -> list[Any]:
    n = len(result.vectors)
    if encoding == "base64":
        return [result.base64(i) for i in range(n)]
    return [result.floats(i) for i in range(n)]


def openai_response(result: EmbeddingResult, encoding: str) -> dict[str, Any]:
    """OpenAI's CreateEmbeddingResponse as a plain dict (built directly: 2048 vectors of a few
    hundred floats would cost more through pydantic than the model takes to compute them)."""
    data = [
        {"object": "embedding", "index": i, "embedding": vec}
        for i, vec in enumerate(_vectors(result, encoding))
    ]
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": result.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def rpc_result(result: EmbeddingResult, encoding: str) -> EmbedResult:
    return EmbedResult(
        model=result.model_id,
        dimensions=result.dimensions,
        embeddings=_vectors(result, encoding),
        tokens=list(result.tokens),
        prompt_tokens=result.prompt_tokens,
        telemetry=request_telemetry(result.record),
    )
