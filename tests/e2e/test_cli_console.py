"""The interactive console (`ingot model run` at a terminal), driven through a pseudo-terminal:
streamed answers with timings, slash commands, multi-line input, Ctrl-C stops an answer but not the
session, Ctrl-D leaves."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e.cli_helpers import PtyProcess, service

ALIAS = "smollm2-135m"
TIMING = r"first token \d+ ms · [\d.]+ tokens/s · \d+ tokens"


def open_console(home: Path, *args: str) -> PtyProcess:
    p = PtyProcess(home, "model", "run", ALIAS, *args)
    p.read_until(r"Chatting with " + re.escape(DEFAULT_ONNX_ID), 120)
    p.read_until(r">>> ", 30)
    return p


def test_console_streams_answers_and_keeps_the_conversation(seeded_home: Path) -> None:
    p = open_console(seeded_home, "--max-tokens", "24", "--temperature", "0")
    try:
        p.sendline("What is the capital of France?")
        out = p.read_until(TIMING, 60)
        # The answer came between the echoed question and the timing line.
        answer = out.split("What is the capital of France?", 1)[1].rsplit("first token", 1)[0]
        assert answer.strip()
        p.read_until(r">>> ", 10)

        p.sendline("/history")
        hist = p.read_until(r">>> ", 10)
        assert "[user] What is the capital of France?" in hist
        assert "[assistant]" in hist

        p.sendline("/params max_tokens=8 temperature=0.5")
        assert "max_tokens=8" in p.read_until(r">>> ", 10)
        p.sendline("/system You answer in French.")
        assert "System prompt set" in p.read_until(r">>> ", 10)

        # Multi-line input: a trailing backslash continues the message.
        p.sendline("Name one colour\\")
        p.read_until(r"\.\.\. ", 10)
        p.sendline("and one animal.")
        out = p.read_until(TIMING, 60)
        assert re.search(r"· [1-8] tokens", out), out  # max_tokens=8 applied
        p.read_until(r">>> ", 10)

        p.sendline("/reset")
        assert "Conversation cleared" in p.read_until(r">>> ", 10)
        p.sendline("/history")
        assert "The conversation is empty" in p.read_until(r">>> ", 10)

        p.sendline("/nonsense")
        assert "Unknown command" in p.read_until(r">>> ", 10)
        p.sendline("/exit")
        assert p.wait(30) == 0
    finally:
        p.close()


def test_ctrl_c_stops_the_answer_not_the_session(seeded_home: Path) -> None:
    p = open_console(seeded_home, "--max-tokens", "1500", "--temperature", "0.8", "--seed", "7")
    try:
        p.sendline("Write a very long story about a dragon, with many chapters.")
        p.read_until(r"dragon, with many chapters\.\s*\n", 20)
        p.read_until(r"\S", 60)  # the first streamed text
        time.sleep(0.5)
        stopped_at = time.monotonic()
        p.ctrl_c()
        p.read_until(r"\[stopped\]", 10)
        assert time.monotonic() - stopped_at < 5, "the answer did not stop promptly"
        p.read_until(r">>> ", 10)

        # The session goes on, and the stopped turn is not in the history.
        p.sendline("/history")
        assert "The conversation is empty" in p.read_until(r">>> ", 10)
        p.sendline("/params max_tokens=6")
        p.read_until(r">>> ", 10)
        p.sendline("Say yes.")
        p.read_until(TIMING, 60)
        p.read_until(r">>> ", 10)

        # Ctrl-C at the prompt does not leave; Ctrl-D does.
        p.ctrl_c()
        p.read_until(r"Ctrl-D leaves", 10)
        p.ctrl_d()
        assert p.wait(30) == 0
    finally:
        p.close()


def test_console_through_the_service(seeded_home: Path) -> None:
    with service(seeded_home) as st:
        p = open_console(seeded_home, "--max-tokens", "8")
        try:
            assert st["url"] in p.text  # it says where the model runs
            p.sendline("Hello!")
            p.read_until(TIMING, 60)
            p.read_until(r">>> ", 10)
            p.sendline("/exit")
            assert p.wait(30) == 0
        finally:
            p.close()
