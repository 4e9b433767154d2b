"""OpenAI's embeddings wire types (`POST /v1/embeddings`), with Ingot's extras and limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from protocol.openai import KeepAlive, _Request, _Response

# As OpenAI: at most 2048 inputs per request.
MAX_EMBEDDING_INPUTS = 2048
MAX_TOKEN_ID = 2**31 - 1

TokenRow = Annotated[list[Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]], Field(min_length=1)]


class EmbeddingRequest(_Request):
    """`input`: a string, a list of strings, one token array, or a list of token arrays (ids of
    the model's own vocabulary, used as given)."""

    model: str = Field(min_length=1, max_length=200)
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
        | TokenRow
        | Annotated[list[TokenRow], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=512)
    # Extras: cut inputs at the model's limit instead of refusing them (Ollama's `truncate`);
    # Foundry's `ttl` and Ollama's `keep_alive`, as for generations.
    truncate: bool = False
    ttl: float | None = Field(None, ge=-1e9, le=1e9, allow_inf_nan=False)
    keep_alive: KeepAlive | None = None


class Embedding(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(_Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
