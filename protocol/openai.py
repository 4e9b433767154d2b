"""OpenAI REST wire types Ingot accepts and returns (snake_case), with validation limits.

Requests validate strictly (a string where a number belongs is a 400, as at OpenAI) and keep unknown
fields (`extra="allow"`) only so that `unsupported_params()` can name every parameter that would
change the output and that Ingot cannot honour: those get a 400, never silent ignoring.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_MESSAGES = 4096
MAX_TOOLS = 128
MAX_STOP = 16
# A stop sequence is rescanned at every token: longer than this it is not a stop sequence.
MAX_STOP_CHARS = 1000
INT64 = 2**63 - 1

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> float:
    """Ollama's keep_alive: seconds or a Go duration ("5m", "1h30m"); negative keeps the model
    loaded (-1), 0 unloads it after the request."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("keep_alive must be a number of seconds or a duration such as '5m'")
    if isinstance(value, str):
        text = value.strip().lower()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        parts = _DURATION.findall(body)
        if re.fullmatch(r"\d+(\.\d+)?", body):
            seconds = sign * float(body)
        elif parts and "".join(n + u for n, u in parts) == body:
            seconds = sign * sum(float(n) * _UNIT_S[u] for n, u in parts)
        else:
            raise ValueError(f"'{value[:40]}' is not a duration such as 300, '5m' or '-1'")
    else:
        seconds = float(value)
    if seconds != seconds or abs(seconds) > 1e9:
        raise ValueError("keep_alive is out of range")
    return -1.0 if seconds < 0 else seconds


KeepAlive = Annotated[float, BeforeValidator(keep_alive_seconds)]
StopText = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Stop = StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ----------------------------------------------------------------------------------
class ContentPart(_Request):
    """A message content part; the engine accepts text parts and names any other kind in a 400."""

    type: str = Field(max_length=64)
    text: str | None = None


class FunctionCall(_Closed):
    name: str = Field(max_length=256)
    arguments: str


class ToolCallIn(_Request):
    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Request):
    """One chat message. Unknown fields (`refusal`, `annotations`, `audio` echoed back by SDKs) are
    history, not output settings, so they are kept and ignored."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[ContentPart], Field(max_length=1024)] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = Field(None, max_length=256)


class FunctionDef(_Closed):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Closed):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Closed):
    name: str = Field(max_length=64)


class NamedToolChoice(_Closed):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Closed):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Closed):
    # regex and grammar (Lark) are Ingot's extensions, done with the same constrained decoding.
    type: Literal["text", "json_object", "json_schema", "regex", "grammar"]
    json_schema: JsonSchemaFormat | None = None
    regex: str | None = Field(None, description="With type regex: the output matches it.")
    grammar: str | None = Field(None, description="With type grammar: a Lark grammar.")


class Prediction(_Closed):
    """Predicted Outputs: text the answer will probably repeat (the code an edit rewrites)."""

    type: Literal["content"]
    content: str | Annotated[list[ContentPart], Field(min_length=1, max_length=1024)]

    def text(self) -> str:
        """The predicted text; only text parts are allowed (ValueError names the others)."""
        if isinstance(self.content, str):
            return self.content
        kinds = {p.type for p in self.content if p.type != "text" or p.text is None}
        if kinds:
            raise ValueError(f"prediction content parts must be text, not {sorted(kinds)}")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(_Closed):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class _Generation(_Request):
    """Fields chat and legacy completions share, including Ingot's and Foundry's extras."""

    model: str = Field(min_length=1, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-INT64 - 1, le=INT64)
    stop: Stop | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=128)
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    user: str | None = Field(None, max_length=512)
    # Extras: Foundry Local (`ttl`, `top_k`, `random_seed`, `ep`), Ollama (`keep_alive`), vLLM.
    ttl: float | None = Field(None, ge=-1e9, le=1e9, allow_inf_nan=False)
    keep_alive: KeepAlive | None = None
    top_k: int | None = Field(None, ge=1, le=100_000)
    random_seed: int | None = Field(None, ge=0, le=INT64)
    repetition_penalty: float | None = Field(None, gt=0, le=10, allow_inf_nan=False)
    ep: str | None = Field(None, max_length=32)


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=INT64)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64)
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # Greedy answers are the same with it, only faster; sampled ones ignore it (docs/rest.md).
    prediction: Prediction | None = None
    # Accepted and ignored: they do not change the output.
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None


class CompletionRequest(_Generation):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1, le=INT64)
    echo: bool | None = None
    best_of: int | None = Field(None, ge=0, le=20)
    logprobs: int | None = Field(None, ge=0, le=5)


class TokenCountRequest(_Request):
    """Foundry Local's `POST /v1/chat/completions/tokenizer/encode/count`."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    prompt: str | None = None


# Extras that never change the output, or that the handlers read from the raw body.
_HARMLESS = {"keep_alive", "ttl", "ep", "user", "store", "metadata", "service_tier"}
# Fields that change the output in ways Ingot cannot honour, and the values that are harmless.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "best_of": (None, 0, 1),
    "echo": (None, False),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "moderation": (None,),
    "functions": (None,),
    "function_call": (None,),
    "guided_json": (None,),
    "min_p": (None,),
}


def unsupported_params(req: BaseModel) -> list[str]:
    """Names of parameters whose values Ingot would have to ignore (which would change the output):
    known ones with a value other than their harmless defaults, and any unknown extra field."""
    bad: list[str] = []
    for name in type(req).model_fields:
        allowed = _UNSUPPORTED.get(name)
        if allowed is not None and getattr(req, name) not in allowed:
            bad.append(name)
    for name, value in (req.model_extra or {}).items():
        if name in _HARMLESS:
            continue
        allowed = _UNSUPPORTED.get(name)
        if allowed is None or value not in allowed:
            bad.append(name)
    return bad


# -- responses ---------------------------------------------------------------------------------
class PromptTokensDetails(_Response):
    cached_tokens: int


class CompletionTokensDetails(_Response):
    # As OpenAI reports Predicted Outputs: prediction tokens that were / were not used.
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    reasoning_tokens: int = 0


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # As OpenAI reports prompt caching: prompt tokens whose KV cache an earlier request made.
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class FunctionOut(_Response):
    name: str
    arguments: str


class ToolCallOut(_Response):
    id: str
    type: Literal["function"] = "function"
    function: FunctionOut


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(_Response):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class IngotExtra(_Response):
    """The namespaced extra field (`"ingot"`): Ingot's timings, which the official SDKs ignore."""

    timings: dict[str, Any]


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str
    ingot: IngotExtra | None = None


class ToolCallDeltaFunction(_Response):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Response):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallDeltaFunction


class ChunkDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Response):
    index: int = 0
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    ingot: IngotExtra | None = None


class CompletionChoice(_Response):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    ingot: IngotExtra | None = None


class Model(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    """`{"message", "type", "param", "code"}`, plus Ingot's structured details under `ingot`."""

    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None = None
    code: str | None = None
    ingot: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
