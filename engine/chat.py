"""Chat preparation shared by every front-end: messages, tools, response formats, stop sequences.

Small models' chat templates often ignore `tools` (SmolLM2's does), so tools are described in the
system prompt, and a forced or required tool call is produced with constrained decoding: the output
is then valid JSON matching the function's parameters even on a 135M model.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequest
from engine.generation import Constraint

Message = dict[str, Any]

TOOL_INSTRUCTIONS = (
    "You can call functions. To call one, reply with only a JSON object of the form "
    '{"name": "<function name>", "arguments": {<arguments>}} and nothing else. '
    "Available functions:\n"
)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True)
class PreparedChat:
    messages: list[Message]
    constraint: Constraint | None
    tools: list[dict[str, Any]]
    # "required": the output must be parsed as a tool call; "auto": it may be one.
    tool_mode: str


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, p in enumerate(content):
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise InvalidRequest(
                    f"{where}.content[{i}] is a '{kind}' part; this model accepts text only.",
                    param=f"{where}.content",
                )
        return "".join(parts)
    raise InvalidRequest(f"{where}.content must be a string or a list of text parts.")


def check_text(text: str, param: str) -> None:
    """Text a tokenizer cannot take (a lone UTF-16 surrogate, as JSON allows) is the caller's
    error, said as such, not a failure deep in the runtime."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequest(
            f"{param} contains a character that is not valid Unicode ({e.reason} at "
            f"position {e.start}).",
            hint="Send UTF-8 text; lone surrogates (\\ud800-\\udfff) cannot be tokenized.",
            param=param,
        ) from None


def normalize_messages(messages: list[Message]) -> list[Message]:
    """OpenAI-style messages -> plain {role, content} text messages any chat template accepts."""
    if not messages:
        raise InvalidRequest("messages must contain at least one message.", param="messages")
    out: list[Message] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in {"system", "user", "assistant", "tool"}:
            raise InvalidRequest(
                f"{where}.role must be system, user, assistant or tool (got {role!r}).",
                param=f"{where}.role",
            )
        text = _text_of(m.get("content"), where)
        check_text(text, f"{where}.content")
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                {
                    "name": c.get("function", {}).get("name"),
                    "arguments": _json_or_text(c.get("function", {}).get("arguments")),
                }
                for c in m["tool_calls"]
            ]
            text = (text + "\n" if text else "") + json.dumps(
                calls[0] if len(calls) == 1 else calls
            )
        if role == "tool":
            # Templates rarely know a "tool" role: present the result as a user turn.
            call = m.get("tool_call_id") or ""
            role, text = "user", f"Result of function call {call}:\n{text}".strip()
        out.append({"role": role, "content": text})
    return out


def _json_or_text(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _function_schema(fn: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _functions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fns = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if t.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            raise InvalidRequest(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}.",
                param=f"tools[{i}]",
            )
        fns.append(fn)
    return fns


def prepare_chat(
    messages: list[Message],
    *,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = None,
    response_format: dict[str, Any] | None = None,
) -> PreparedChat:
    msgs = normalize_messages(messages)
    fns = _functions(tools or [])
    constraint: Constraint | None = None
    mode = "none"
    if fns and tool_choice != "none":
        mode = "auto"
        chosen = fns
        if isinstance(tool_choice, dict):
            name = (tool_choice.get("function") or {}).get("name")
            chosen = [f for f in fns if f["name"] == name]
            if not chosen:
                raise InvalidRequest(
                    f"tool_choice names '{name}', which is not in tools.", param="tool_choice"
                )
            mode = "required"
        elif tool_choice == "required":
            mode = "required"
        elif tool_choice not in (None, "auto"):
            raise InvalidRequest(
                "tool_choice must be 'none', 'auto', 'required' or a named function.",
                param="tool_choice",
            )
        listing = json.dumps(
            [{k: f[k] for k in ("name", "description", "parameters") if k in f} for f in chosen],
            indent=1,
        )
        msgs = _with_system(msgs, TOOL_INSTRUCTIONS + listing)
        if mode == "required":
            schemas = [_function_schema(f) for f in chosen]
            one_of: dict[str, Any] = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
            constraint = Constraint("json_schema", json.dumps(one_of))
    if response_format and mode != "required":
        rtype = response_format.get("type")
        if rtype == "json_object":
            constraint = Constraint("json_schema", json.dumps({"type": "object"}))
            msgs = _with_system(msgs, "Reply with a JSON object only.")
        elif rtype == "json_schema":
            js = response_format.get("json_schema") or {}
            schema: Any = js.get("schema") if isinstance(js, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema must be a JSON Schema object.",
                    param="response_format",
                )
            constraint = Constraint("json_schema", json.dumps(schema))
            msgs = _with_system(
                msgs, "Reply with JSON that matches this schema: " + json.dumps(schema)
            )
        elif rtype in ("regex", "grammar"):
            # Ingot's extensions (vLLM's guided decoding has the same two): the output must
            # match a regular expression, or a Lark grammar.
            key = "regex" if rtype == "regex" else "grammar"
            text = response_format.get(key)
            if not isinstance(text, str) or not text:
                raise InvalidRequest(
                    f"response_format.{key} must be a non-empty string.",
                    param="response_format",
                )
            constraint = Constraint("regex" if rtype == "regex" else "lark_grammar", text)
        elif rtype not in (None, "text"):
            raise InvalidRequest(
                "response_format.type must be text, json_object, json_schema, regex or grammar.",
                param="response_format",
            )
    return PreparedChat(msgs, constraint, fns, mode)


def _with_system(msgs: list[Message], text: str) -> list[Message]:
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": msgs[0]["content"] + "\n\n" + text}, *msgs[1:]]
    return [{"role": "system", "content": text}, *msgs]


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def parse_tool_calls(text: str, prepared: PreparedChat) -> list[ToolCall]:
    """A reply that is a JSON call (or list of calls) to a known function becomes tool calls."""
    if prepared.tool_mode == "none":
        return []
    s = text.strip()
    for tag in ("<tool_call>", "</tool_call>"):
        s = s.replace(tag, "")
    s = s.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(s)
    except ValueError:
        return []
    items = data if isinstance(data, list) else [data]
    names = {f["name"] for f in prepared.tools}
    calls = []
    for it in items:
        if not isinstance(it, dict) or it.get("name") not in names:
            return []
        args = it.get("arguments", it.get("parameters", {}))
        calls.append(
            ToolCall(
                new_call_id(), str(it["name"]), args if isinstance(args, str) else json.dumps(args)
            )
        )
    return calls


class StopMatcher:
    """Finds stop sequences in streamed text without emitting a partial match too early."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.matched = False

    def feed(self, piece: str) -> str:
        """Returns the text that is safe to emit now; sets `matched` when a stop sequence ends it."""
        if not self.stops:
            return piece
        buf = self._held + piece
        cut = min((i for s in self.stops if (i := buf.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.matched = True
            self._held = ""
            return buf[:cut]
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
