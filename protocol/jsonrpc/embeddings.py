"""The `ingot/embed` method: texts (or token arrays) in, one vector per input out."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from protocol.base import WireModel
from protocol.jsonrpc.generation import RequestTelemetry
from protocol.openai_embeddings import MAX_EMBEDDING_INPUTS, TokenRow
from protocol.registry import MethodSpec, register


class EmbedParams(WireModel):
    model: str = Field(description="Alias, name or id of an embedding model.", min_length=1)
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
        | Annotated[list[TokenRow], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    ) = Field(
        description="A text, a list of texts, or a list of token arrays (ids of the model's own "
        "vocabulary, used as given)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description="`base64`: each vector as base64 of its float32 little-endian bytes "
        "(OpenAI's format), a quarter of the size of the float lists.",
    )
    truncate: bool = Field(
        False,
        description="Cut inputs longer than the model takes at its limit instead of refusing them.",
    )
    ttl: float | None = Field(
        None,
        ge=-1e9,
        le=1e9,
        allow_inf_nan=False,
        description="Seconds to keep the model loaded after this.",
    )


class EmbedResult(WireModel):
    model: str
    dimensions: int
    embeddings: list[list[float]] | list[str] = Field(
        description="One vector per input, in input order: floats, or base64 strings."
    )
    tokens: list[int] = Field(description="Tokens embedded per input.")
    prompt_tokens: int
    telemetry: RequestTelemetry


register(
    MethodSpec(
        "ingot/embed",
        "request",
        "client->server",
        "Embed texts with an embedding model (all-minilm-l6-v2): one L2-normalised vector each.",
        EmbedParams,
        EmbedResult,
        errors=(
            "invalid_request",
            "model_not_found",
            "model_not_cached",
            "runtime_unavailable",
            "load_failed",
            "wrong_model_task",
            "context_length_exceeded",
            "engine_busy",
            "generation_failed",
        ),
        doc="Inputs run in batches of similar length. An input longer than the model's limit "
        "(`contextLength`, 256 tokens for all-minilm-l6-v2) is an error naming it unless "
        "`truncate` is set; a chat model answers `wrong_model_task`. `$/cancelRequest` stops "
        "between batches.",
        example_params={"model": "all-minilm-l6-v2", "input": ["def add(a, b):", "sum of two"]},
    ),
)
