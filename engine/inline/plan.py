"""The completion request an inline suggestion makes: how much text around the cursor, and limits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.inline.fit import fit_completion, wants_block

# The word being typed, with the space before it: a prompt that ends inside a token is one the
# model never saw in training (it starts a new token instead of finishing the word).
PARTIAL_WORD = re.compile(r"[ \t]?\w*$")


@dataclass(frozen=True)
class InlineStrategy:
    """How the text around the cursor becomes a prompt. With `fim` the text after the cursor
    goes too (the model's fill-in-the-middle prompt, or the chat instruction with a <CURSOR>
    marker for models without one); without it the model plainly continues the text before."""

    name: str
    prefix_chars: int
    suffix_chars: int
    fim: bool
    # Mid-line only the line's end is kept, so stop generating there (fast) — unless the
    # model's answer may start with a ``` fence line, as chat answers do.
    stop_at_newline: bool
    # Leave the word being typed out of the prompt; the answer must then start with it.
    heal: bool = False


STRATEGIES = {
    s.name: s
    for s in (
        InlineStrategy("chat-fim", 2000, 1000, fim=True, stop_at_newline=False),
        InlineStrategy("chat-fim-short", 600, 200, fim=True, stop_at_newline=False),
        InlineStrategy("plain", 2000, 0, fim=False, stop_at_newline=True),
        InlineStrategy("plain-short", 600, 0, fim=False, stop_at_newline=True),
        InlineStrategy("plain-heal", 2000, 0, fim=False, stop_at_newline=True, heal=True),
        InlineStrategy("plain-heal-short", 600, 0, fim=False, stop_at_newline=True, heal=True),
    )
}
# Measured on HumanEval with the default SmolLM2-135M-Instruct (docs/performance.md): a model
# without FIM tokens answers the chat instruction by restating the file, and continues the text
# best when the word being typed is left to it.
DEFAULT_STRATEGY = STRATEGIES["plain-heal"]
LINE_TOKENS = 32
BLOCK_TOKENS = 64


@dataclass(frozen=True)
class InlinePlan:
    """A completion request (`suffix` None: plain continuation) and what it may produce."""

    prompt: str
    suffix: str | None
    max_tokens: int
    stop: tuple[str, ...]
    block: bool
    # The end of the text before the cursor that the prompt leaves out (see InlineStrategy.heal).
    healed: str = ""


def plan_inline(before: str, after: str, strategy: InlineStrategy = DEFAULT_STRATEGY) -> InlinePlan:
    """The request for a suggestion at the cursor between `before` and `after`."""
    block = wants_block(before, after)
    if block:
        stop: tuple[str, ...] = ("\n\n",)  # a blank line ends a suggested block
    else:
        stop = ("\n",) if strategy.stop_at_newline else ("\n\n",)
    healed = ""
    if strategy.heal:
        # Mid-word, the word; at a line start, the indentation's last space (" return" is one
        # token, and the model's indentation should match the line's).
        m = PARTIAL_WORD.search(before.rpartition("\n")[2])
        healed = m.group() if m else ""
    window = before[: len(before) - len(healed)]
    return InlinePlan(
        prompt=window[max(0, len(window) - strategy.prefix_chars) :],
        suffix=after[: strategy.suffix_chars] if strategy.fim else None,
        max_tokens=BLOCK_TOKENS if block else LINE_TOKENS,
        stop=stop,
        block=block,
        healed=healed,
    )


def inline_suggestion(plan: InlinePlan, before: str, after: str, answer: str) -> str:
    """What to insert at the cursor, from the answer to `plan`'s request (see fit_completion)."""
    if plan.healed:
        if answer.startswith(plan.healed):
            answer = answer[len(plan.healed) :]
        elif plan.healed.strip():
            return ""  # the model went on with another word than the one being typed
    return fit_completion(before, after, answer)
