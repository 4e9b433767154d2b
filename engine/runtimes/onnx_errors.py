"""Which ONNX Runtime GenAI failures are the request's fault: an empty prompt, a grammar, regex
or JSON schema that llguidance refuses. Those become InvalidRequest (a 400 / -32010 that says
what to change); everything else stays GenerationFailed."""

from __future__ import annotations

import re

from engine.errors import GenerationFailed, IngotError, InvalidRequest
from engine.generation import Constraint

# llguidance's messages for a constraint it cannot build or run (ORT GenAI passes them through).
_CONSTRAINT_ERRORS = (
    "Error creating grammar",
    "lexer error",
    "parser error",
    "regex parse error",
    "LexerTooComplex",
    "grammar",
)
_WHAT = {
    "regex": ("The regex in response_format", "Fix the regular expression or make it smaller"),
    "lark_grammar": ("The Lark grammar in response_format", "Fix the grammar or make it smaller"),
    "json_schema": (
        "The JSON schema in response_format or tools",
        "Fix the schema or make it smaller",
    ),
}
MAX_DETAIL = 400
# The runtime's refusal of a search option the request set ("top_k (99999) must be less than or
# equal to vocab_size (49152)"): the request's value, not a server failure.
_SEARCH_OPTION = re.compile(r"\b(top_k|top_p|temperature|repetition_penalty) \(")


def _detail(message: str) -> str:
    """The runtime's own explanation, without its prefixes and the parser state it dumps."""
    text = message.split("<state>", 1)[0]
    for prefix in ("Generation failed in ONNX Runtime GenAI:", "Error creating grammar:"):
        text = text.split(prefix, 1)[-1]
    text = text.strip()
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "…"


def generation_error(message: str, constraint: Constraint | None) -> IngotError:
    """The engine error for a failure message from the worker."""
    if "input_ids is empty" in message:
        return InvalidRequest(
            "The prompt is empty: it has no tokens (an empty string, or only characters the "
            "tokenizer drops, such as NUL).",
            hint="Send some text in the prompt.",
            param="prompt",
        )
    if m := _SEARCH_OPTION.search(message):
        return InvalidRequest(
            f"{m.group(1)} is out of range for this model: {_detail(message)}",
            hint=f"Send a smaller {m.group(1)}.",
            param=m.group(1),
        )
    if constraint is not None and any(s in message for s in _CONSTRAINT_ERRORS):
        what, fix = _WHAT.get(constraint.kind, _WHAT["json_schema"])
        detail = _detail(message)
        return InvalidRequest(
            f"{what} cannot be used: {detail}{'' if detail.endswith('.') else '.'}",
            hint=f"{fix}; the model runs it as constrained decoding.",
            # A JSON schema may be a tool's parameters rather than response_format.
            param=None if constraint.kind == "json_schema" else "response_format",
        )
    return GenerationFailed(message)
