"""Cleaning a small model's answers for the editor: fences and prose after code, restated text."""

from __future__ import annotations

import pytest

from server.jsonrpc.handlers.generation import drop_restated_prefix, strip_fences


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("```python\ndef f():\n    pass\n```", "def f():\n    pass"),
        ("def f():\n    pass\n```\n\nThis code defines f.", "def f():\n    pass\n"),
        ("```python\ndef f():\n    pass\n```\n\nThe docstring is added.", "def f():\n    pass\n"),
        ("x = 1\n", "x = 1\n"),
        ("no fences at all", "no fences at all"),
    ],
)
def test_strip_fences(answer: str, code: str) -> None:
    assert strip_fences(answer) == code


def test_drop_restated_prefix() -> None:
    prefix = "def fahrenheit(celsius):\n    return celsius * 9 / 5"
    restated = "def fahrenheit(celsius):\n    return celsius * 9 / 5 + 32\n"
    assert drop_restated_prefix(prefix, restated) == " + 32\n"
    assert drop_restated_prefix(prefix, " + 32") == " + 32"
    # A short coincidence is not a restatement.
    assert drop_restated_prefix("x = a", "a + 1") == "a + 1"
