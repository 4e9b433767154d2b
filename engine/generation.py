"""What a generation is: sampling settings, constraints, streamed events and the final result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
ConstraintKind = Literal["json_schema", "regex", "lark_grammar"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float | None = None  # None: the model's default; 0: greedy
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float | None = None
    # Text the answer will probably repeat (OpenAI's Predicted Outputs; an edit's selection):
    # runtimes that can verify several tokens at once draft from it. Greedy output is the same
    # with or without it; sampled requests ignore it.
    prediction: str | None = None


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding (llguidance in ORT GenAI): the output must match this grammar."""

    kind: ConstraintKind
    text: str


@dataclass(frozen=True)
class GenerationRequest:
    """A fully rendered prompt (chat template already applied) and how to sample from it."""

    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    constraint: Constraint | None = None
    # Latency class (engine.scheduler.PRIORITY_*): runtimes that interleave requests use it.
    priority: int = 1


@dataclass(frozen=True)
class TextDelta:
    """Text decoded from the newest token(s); `tokens` counts the completion tokens so far.

    A runtime that hands over several tokens at once gives each one's text in `pieces` (their
    concatenation is `text`), so a stop sequence can be placed at the token that completed it."""

    text: str
    tokens: int
    pieces: tuple[str, ...] = ()

    @classmethod
    def batch(cls, pieces: list[str], tokens: int) -> TextDelta:
        return cls("".join(pieces), tokens, tuple(pieces))


@dataclass(frozen=True)
class RuntimeStats:
    """What the runtime measured for one generation (monotonic seconds)."""

    prompt_tokens: int
    completion_tokens: int
    started: float
    first_token: float | None
    finished: float
    finish_reason: FinishReason
    # Prompt tokens whose KV cache came from an earlier request (not prefilled again).
    cached_tokens: int = 0
    # Draft tokens from the prediction that the model kept, and those it computed and threw away.
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


GenerationEvent = TextDelta | RuntimeStats
