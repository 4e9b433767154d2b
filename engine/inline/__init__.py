"""Inline completions: the request an editor's cursor makes, and the answer fitted to the line."""

from engine.inline.fit import drop_restated_prefix, fit_completion, strip_fences
from engine.inline.plan import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    InlinePlan,
    InlineStrategy,
    inline_suggestion,
    plan_inline,
)

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "InlinePlan",
    "InlineStrategy",
    "drop_restated_prefix",
    "fit_completion",
    "inline_suggestion",
    "plan_inline",
    "strip_fences",
]
