"""Engine-level generation requests and results, shared by every front-end."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from engine.chat import ToolCall
from engine.generation import SamplingParams
from engine.scheduler import PRIORITY_CHAT
from engine.telemetry import RequestRecord


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    params: SamplingParams = field(default_factory=SamplingParams)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    ttl_s: float | None = None
    priority: int = PRIORITY_CHAT
    kind: str = "chat"
    request_id: str = field(default_factory=new_request_id)


@dataclass(frozen=True)
class CompletionRequest:
    """Raw completion. With `suffix`, fill-in-the-middle where the model supports it; otherwise the
    text around the cursor is turned into an instruction for the chat template."""

    model: str
    prompt: str
    suffix: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    ttl_s: float | None = None
    priority: int = PRIORITY_CHAT
    kind: str = "complete"
    request_id: str = field(default_factory=new_request_id)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of prompt_tokens, reused from an earlier request's KV cache
    # Draft tokens from the request's prediction the model kept / computed and threw away.
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class GenerationResult:
    request_id: str
    model_id: str
    text: str
    finish_reason: str
    usage: Usage
    record: RequestRecord
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Delta:
    """Streamed text; `tokens` is the number of completion tokens produced so far."""

    text: str
    tokens: int


GenerationStreamEvent = Delta | GenerationResult
