"""Wire types for generation: chat, completion, edit, the interactive console, and streamed deltas."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from protocol.base import WireModel
from protocol.openai import MAX_MESSAGES, MAX_STOP, MAX_STOP_CHARS


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class Sampling(WireModel):
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=100_000)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    # The same caps as the OpenAI routes: a stop sequence is rescanned at every token.
    stop: list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]] | None = Field(
        None, max_length=MAX_STOP
    )
    repetition_penalty: float | None = Field(None, gt=0, le=10)


class StreamParams(WireModel):
    partial_result_token: str | int | None = Field(
        None,
        description="LSP partial results: when set, each text delta is sent as "
        "`$/progress {token, value: StreamDelta}` while the request runs.",
    )


Priority = Literal["interactive", "chat", "batch"]
# What a request is for (telemetry and the request history keep it): a short fixed set.
RequestKind = Literal["chat", "complete", "edit", "inline", "console"]
# A prediction is the text of a selection or file: capped like a prompt's text.
MAX_PREDICTION_CHARS = 1_000_000


class ChatParams(Sampling, StreamParams):
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    ttl: float | None = None
    priority: Priority | None = Field(
        None, description="Latency class: interactive requests run before chat, chat before batch."
    )
    kind: RequestKind | None = Field(
        None, description="What the request is for, as shown in telemetry."
    )
    prediction: str | None = Field(
        None,
        max_length=MAX_PREDICTION_CHARS,
        description="Text the answer will probably repeat (OpenAI's Predicted Outputs): with greedy "
        "decoding its tokens are drafts the model verifies several at a time, which speeds up "
        "rewrites that keep most of it; the answer is the same with or without it. Ignored "
        "when sampling (temperature > 0) and with constrained output.",
    )


class CompleteParams(Sampling, StreamParams):
    model: str = Field(min_length=1, max_length=200)
    prompt: str
    suffix: str | None = Field(None, description="Text after the cursor (fill-in-the-middle).")
    ttl: float | None = None
    priority: Priority | None = None
    kind: RequestKind | None = None


class StreamDelta(WireModel):
    """One streamed piece of text (the `value` of a `$/progress` partial result)."""

    text: str
    tokens: int = Field(description="Completion tokens produced so far.")


class ToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: dict[str, str] = Field(description="`{name, arguments}`; arguments is JSON text.")


class Usage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = Field(
        0, description="Of the prompt tokens, those reused from an earlier request's KV cache."
    )
    accepted_prediction_tokens: int = Field(
        0, description="Tokens of the prediction the model kept (drafts it verified)."
    )
    rejected_prediction_tokens: int = Field(
        0, description="Draft tokens of the prediction the model computed and threw away."
    )


class RequestTelemetry(WireModel):
    """Measurements of one request (ms, tokens/s)."""

    request_id: str
    model_id: str
    runtime: str
    device: str
    kind: str
    started_at: float
    queue_ms: float
    load_ms: float
    ttft_ms: float | None
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    prefill_tps: float | None
    decode_tps: float | None
    finish_reason: str
    cached_tokens: int = Field(
        0, description="Prompt tokens reused from an earlier request's KV cache (not prefilled)."
    )


class GenerationResult(WireModel):
    request_id: str
    model: str
    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: Literal["stop", "length", "tool_calls"]
    usage: Usage
    telemetry: RequestTelemetry


class Position(WireModel):
    line: int = Field(ge=0)
    character: int = Field(ge=0)


class Range(WireModel):
    start: Position
    end: Position


class EditParams(Sampling, StreamParams):
    uri: str = Field(description="An open document (textDocument/didOpen).")
    range: Range
    instruction: str = Field(min_length=1)
    model: str | None = Field(None, description="Defaults to the inline model or the loaded one.")
    prediction: str | None = Field(
        None,
        max_length=MAX_PREDICTION_CHARS,
        description="Predicted output (see ChatParams.prediction); defaults to the selected text, "
        "which a rewrite mostly keeps.",
    )


class EditResult(WireModel):
    uri: str
    range: Range
    original: str
    text: str = Field(description="The full replacement for the range.")
    generation: GenerationResult


class ConsoleOpenParams(Sampling):
    model: str = Field(min_length=1, max_length=200)
    system: str | None = None


class ConsoleSession(WireModel):
    session_id: str
    model: str
    context_length: int
    tokens: int = Field(description="Tokens the conversation takes in the context so far.")
    messages: list[ChatMessage]


class ConsoleRef(WireModel):
    session_id: str


class ConsoleSendParams(StreamParams):
    session_id: str
    message: str = Field(min_length=1)


class ConsoleSendResult(WireModel):
    session: ConsoleSession
    generation: GenerationResult
