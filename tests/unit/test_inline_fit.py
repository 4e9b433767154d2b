"""Inline suggestions fitted to the cursor: a line mid-line, a block only where one can start."""

from __future__ import annotations

import pytest

from engine.inline import (
    STRATEGIES,
    fit_completion,
    inline_suggestion,
    plan_inline,
)
from engine.inline.fit import wants_block
from engine.inline.plan import BLOCK_TOKENS, LINE_TOKENS

GREET = 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n\n\n'
TYPED = GREET + "def fahrenheit(celsius: float) -> float:\n    return celsius * 9 / 5"


@pytest.mark.parametrize(
    "answer",
    [
        'def greet(name: str) -> str: return f"Hello, {name}!"',  # the bug report's ghost text
        "def greet(name: str) -> str:\n    ...",
        "def greet(name",  # a repetition cut short by the token limit
        '    return f"Hello, {name}!"',
    ],
)
def test_a_suggestion_that_restates_a_line_above_is_dropped(answer: str) -> None:
    assert fit_completion(TYPED, "\n", answer) == ""


def test_mid_line_keeps_the_rest_of_the_line_only() -> None:
    answer = " + 32\n\n\ndef greet(name: str) -> str:\n    pass"
    assert fit_completion(TYPED, "\n", answer) == " + 32"
    assert fit_completion(TYPED, "\n", " + 32\nprint(fahrenheit(100))") == " + 32"


def test_mid_line_drops_the_text_before_the_cursor_said_again() -> None:
    assert fit_completion(TYPED, "\n", "return celsius * 9 / 5 + 32") == " + 32"
    restated = "def fahrenheit(celsius: float) -> float:\n    return celsius * 9 / 5 + 32\n"
    assert fit_completion(TYPED, "\n", restated) == " + 32"
    # The space before the cursor is typed already.
    assert fit_completion("x = ", "\n", " 1") == "1"


def test_mid_line_does_not_type_what_the_line_has_after_the_cursor() -> None:
    before = "print(add(1, "
    assert fit_completion(before, "))\n", "2))") == "2"
    assert fit_completion(before, "))\n", "2)") == "2"
    assert fit_completion(before, "))\n", "2") == "2"
    assert fit_completion(before, "))\n", "))") == ""  # only punctuation already there
    assert fit_completion("if x ==", ":\n", " 0:  # zero") == " 0:  # zero"
    # A closer the suggestion needs for its own opener stays: `print(|)` + `len(x)`.
    assert fit_completion("print(", ")\n", "len(x)") == "len(x)"
    assert fit_completion("print(", ")\n", "len(x))") == "len(x)"


def test_mid_line_never_suggests_several_lines() -> None:
    before = "def total(xs):\n    s = "
    assert fit_completion(before, "\n", "sum(xs)\n    return s\n") == "sum(xs)"
    assert fit_completion(before, "\n", "\n    return s") == ""  # the model ended the line


def test_blocks_only_at_a_line_start_or_after_an_opener() -> None:
    assert wants_block("def f():\n    ", "\n")
    assert wants_block("", "")
    for opener in ("def f(x):", "x = {", "call(", "xs = [", "const f = () =>"):
        assert wants_block(opener, "\n"), opener
    assert not wants_block("    return x", "\n")
    assert not wants_block("call(", ")\n")  # the line goes on after the cursor
    assert not wants_block("    ", "return x\n")


def test_a_block_at_a_line_start_ends_at_a_blank_line() -> None:
    before = "def total(xs):\n    s = 0\n    "
    answer = "for x in xs:\n        s += x\n    return s\n\ndef other():\n    pass"
    assert fit_completion(before, "\n", answer) == "for x in xs:\n        s += x\n    return s"


def test_a_block_ends_where_it_dedents_below_its_start() -> None:
    before = "class A:\n    def f(self):\n        "
    answer = "return 1\n    def g(self):\n        return 2"
    assert fit_completion(before, "\n", answer) == "return 1"
    # The model ended the cursor line and went on at a shallower indentation: nothing fits.
    assert fit_completion(before, "\n", "\n    def g(self):\n        return 2") == ""


def test_a_block_at_a_line_start_is_not_indented_twice() -> None:
    before = "def f(x):\n    y = x + 1\n    "
    assert fit_completion(before, "\n", "    return y") == "return y"
    assert fit_completion(before, "\n", "\n    return y\n") == "return y"


def test_a_block_after_an_opener_takes_its_body() -> None:
    answer = "\n    y = x * 2\n    return y\ndef g():\n    pass"
    assert fit_completion("def f(x):", "\n", answer) == "\n    y = x * 2\n    return y"
    # A closing bracket at the opener's indentation ends the block, and is kept.
    assert fit_completion("xs = [", "\n", "\n    1,\n    2,\n]\nprint(xs)") == "\n    1,\n    2,\n]"


def test_a_block_stops_before_lines_it_repeats() -> None:
    before = "def f(xs):\n    out: list[int] = []\n    "
    answer = "for x in xs:\n        out.append(x * 2)\n        out.append(x * 2)"
    assert fit_completion(before, "\n", answer) == "for x in xs:\n        out.append(x * 2)"
    # A line that re-states one above ends the block; an opener left without a body goes too.
    answer = "n = len(xs)\n    if n > 10:\n        out: list[int] = []\n    return out"
    assert fit_completion(before, "\n", answer) == "n = len(xs)"
    # The line after the cursor is in the document already.
    assert fit_completion(before, "\n    return out\n", "x = 1\n    return out") == "x = 1"


@pytest.mark.parametrize("answer", ["", "   ", "\n\n", "```python\n```", "\n", "<CURSOR>"])
def test_nothing_useful_gives_nothing(answer: str) -> None:
    assert fit_completion(TYPED, "\n", answer) == ""
    assert fit_completion("def f():\n    ", "\n", answer) == ""


def test_fences_and_an_echoed_cursor_marker_are_removed() -> None:
    assert fit_completion(TYPED, "\n", "```python\n + 32\n```") == " + 32"
    assert fit_completion(TYPED, "\n", " + 32<CURSOR>\n") == " + 32"
    assert fit_completion("def f():\n    ", "\n", "```\nreturn 1\n```\nThat is it.") == "return 1"


def test_the_plan_stops_at_the_end_of_the_line_mid_line() -> None:
    plan = plan_inline(TYPED, "\n", STRATEGIES["plain"])
    assert plan.stop == ("\n",) and plan.max_tokens == LINE_TOKENS and not plan.block
    assert plan.suffix is None and TYPED.endswith(plan.prompt)
    block = plan_inline("def f():\n    ", "\n", STRATEGIES["plain"])
    assert block.block and block.max_tokens == BLOCK_TOKENS and "\n" not in block.stop
    fim = plan_inline("x" * 5000, "y" * 5000, STRATEGIES["chat-fim"])
    assert fim.suffix == "y" * 1000 and len(fim.prompt) == 2000


def test_a_healed_plan_leaves_the_word_being_typed_to_the_model() -> None:
    strategy = STRATEGIES["plain-heal"]
    before = "def f(xs):\n    r"
    plan = plan_inline(before, "\n", strategy)
    assert plan.healed == " r" and plan.prompt == "def f(xs):\n   "
    assert inline_suggestion(plan, before, "\n", " result = []") == "esult = []"
    assert inline_suggestion(plan, before, "\n", " x = 1") == ""  # another word: no fit
    start = plan_inline("def f(xs):\n    ", "\n", strategy)
    assert start.healed == " " and start.block
    assert inline_suggestion(start, "def f(xs):\n    ", "\n", " return xs") == "return xs"


def test_the_default_plan_finishes_the_bug_reports_line() -> None:
    plan = plan_inline(TYPED, "\n")  # the default strategy: plain continuation, healed
    assert plan.suffix is None and plan.healed == " 5" and TYPED.endswith(plan.prompt + " 5")
    # What the default model answers there.
    assert inline_suggestion(plan, TYPED, "\n", " 5 + 32\n") == " + 32"
    assert inline_suggestion(plan, TYPED, "\n", " 5\n\ndef greet(name: str) -> str:") == ""
