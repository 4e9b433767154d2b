"""`ingot model run`: one answer for scripts, or the interactive console.

One answer with `--prompt` or text on stdin; otherwise streamed answers, multi-line input, slash
commands, Ctrl-C stops an answer, timings after each.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from engine.errors import IngotError
from server.cli.client import ChatOutcome, ChatTurn, CliError, EngineClient
from server.cli.context import CliContext
from server.cli.model_cmd import download_model
from server.cli.render import note, print_error

HELP = """Commands:
  /system [TEXT]          show or set the system prompt (/system off clears it)
  /params [KEY=VALUE...]  show or set max_tokens, temperature, top_p, top_k, seed (KEY=default unsets)
  /reset                  forget the conversation (the system prompt and params stay)
  /history                show the conversation
  /exit                   leave (Ctrl-D too)
Multi-line input: end a line with \\ to continue it, or wrap the text in \"\"\" lines.
Ctrl-C stops the answer being written; the session goes on."""

PARAM_TYPES: dict[str, type] = {
    "max_tokens": int,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "seed": int,
}


def sampling_from_args(args: argparse.Namespace) -> dict[str, Any]:
    params = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    return {k: v for k, v in params.items() if v is not None}


def timing_line(o: ChatOutcome) -> str:
    parts = []
    if o.ttft_ms is not None:
        parts.append(f"first token {o.ttft_ms:.0f} ms")
    if o.decode_tps:
        parts.append(f"{o.decode_tps:.1f} tokens/s")
    parts.append(f"{o.completion_tokens} tokens")
    if o.finish_reason == "length":
        parts.append("cut at max_tokens")
    return " · ".join(parts)


def _stdout_text(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_model(ctx: CliContext, args: argparse.Namespace) -> int:
    prompt: str | None = args.prompt
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise CliError(
                "Standard input was empty: there is nothing to answer.",
                hint='Pass --prompt "..." or pipe some text in.',
                exit_code=2,
            )
    # Progress and load messages go to stderr, so `--prompt` output stays exactly the answer.
    mi = download_model(ctx, args.model, quiet_if_cached=True)
    client = ctx.client()
    interactive = prompt is None
    if interactive or sys.stderr.isatty():
        where = "" if not client.remote else f" in the service at {client.where}"
        note(f"Loading {mi.id}{where}...")
    loaded = ctx.run(client.load(mi.id, args.ttl, lambda _: None))
    params = sampling_from_args(args)
    if not interactive:
        assert prompt is not None
        return answer_once(ctx, client, loaded.id, prompt, args.system, params, args.ttl)
    ChatConsole(ctx, client, loaded.id, loaded.context_length, args.system, params, args.ttl).loop()
    return 0


def answer_once(
    ctx: CliContext,
    client: EngineClient,
    model: str,
    prompt: str,
    system: str | None,
    params: dict[str, Any],
    ttl: float | None,
) -> int:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    try:
        outcome = ctx.run(client.chat(ChatTurn(model, messages, params, ttl), _stdout_text))
    except KeyboardInterrupt:
        sys.stdout.write("\n")  # end the partial answer's line before the note
        raise
    if not outcome.text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    if sys.stderr.isatty():
        note(timing_line(outcome))
    return 0


class ChatConsole:
    def __init__(
        self,
        ctx: CliContext,
        client: EngineClient,
        model: str,
        context_length: int,
        system: str | None,
        params: dict[str, Any],
        ttl: float | None,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.model = model
        self.context_length = context_length
        self.system = system
        self.params = dict(params)
        self.ttl = ttl
        self.messages: list[dict[str, Any]] = []
        self.tokens = 0  # prompt + answer of the last turn: how full the context is

    # -- input ---------------------------------------------------------------------------------
    def read_message(self) -> str:
        """One message (possibly several lines); EOFError at end of input (Ctrl-D)."""
        lines: list[str] = []
        block = False
        while True:
            line = input("... " if lines or block else ">>> ")
            if not lines and not block and line.strip() == '"""':
                block = True
                continue
            if block:
                if line.strip() == '"""':
                    return "\n".join(lines)
                lines.append(line)
                continue
            if line.endswith("\\"):
                lines.append(line[:-1])
                continue
            lines.append(line)
            return "\n".join(lines)

    def loop(self) -> None:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401  # line editing and history for input()
        note(
            f"Chatting with {self.model}. /help lists commands; /exit or Ctrl-D leaves; "
            "Ctrl-C stops an answer."
        )
        while True:
            # Ctrl-C never ends the session: at the prompt it clears the line, during an answer
            # `turn` stops it, and one landing between the two is simply absorbed here.
            try:
                text = self.read_message()
                if not text.strip():
                    continue
                if text.startswith("/") and "\n" not in text:
                    if not self.command(text.strip()):
                        return
                    continue
                self.turn(text)
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                note("(Ctrl-C clears the line; /exit or Ctrl-D leaves.)")
            except EOFError:
                sys.stdout.write("\n")
                return

    # -- slash commands --------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name in ("/help", "/?"):
            print(HELP)
        elif name == "/reset":
            self.messages.clear()
            self.tokens = 0
            note("Conversation cleared.")
        elif name == "/history":
            self.show_history()
        elif name == "/system":
            if not rest:
                note(f"System prompt: {self.system!r}" if self.system else "No system prompt.")
            elif rest in ("off", "none", "-"):
                self.system = None
                note("System prompt cleared.")
            else:
                self.system = rest
                note("System prompt set.")
        elif name == "/params":
            self.set_params(rest.split())
        else:
            note(f"Unknown command {name}. /help lists the commands.")
        return True

    def set_params(self, items: list[str]) -> None:
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in PARAM_TYPES:
                note(f"'{item}' is not KEY=VALUE with KEY one of {', '.join(PARAM_TYPES)}.")
                return
            if value in ("default", "none", ""):
                self.params.pop(key, None)
                continue
            try:
                self.params[key] = PARAM_TYPES[key](value)
            except ValueError:
                note(f"{key} must be a {PARAM_TYPES[key].__name__}, not '{value}'.")
                return
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items())) or "model defaults"
        note(f"Params: {shown}")

    def show_history(self) -> None:
        if self.system:
            print(f"[system] {self.system}")
        if not self.messages:
            note("(The conversation is empty.)")
        for msg in self.messages:
            print(f"[{msg['role']}] {msg['content']}")
        if self.tokens:
            note(f"{self.tokens} of {self.context_length} context tokens used.")

    # -- answers -------------------------------------------------------------------------------
    def turn(self, text: str) -> None:
        head = [{"role": "system", "content": self.system}] if self.system else []
        convo = [*self.messages, {"role": "user", "content": text}]
        turn = ChatTurn(self.model, head + convo, dict(self.params), self.ttl)
        try:
            outcome = self.ctx.run(self.client.chat(turn, _stdout_text))
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            note("[stopped] This turn is not kept in the history.")
            return
        except IngotError as e:
            sys.stdout.write("\n")
            hint = e.hint
            if e.kind == "context_length_exceeded":
                hint = (hint + " " if hint else "") + "/reset starts a new conversation."
            print_error(e.message, hint)
            return
        if not outcome.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        self.messages = [*convo, {"role": "assistant", "content": outcome.text}]
        self.tokens = outcome.prompt_tokens + outcome.completion_tokens
        note(timing_line(outcome))
