"""Handlers for generation: ingot/chat, ingot/complete, ingot/edit, textDocument/inlineCompletion."""

from __future__ import annotations

import re
from typing import Any

from lsprotocol import types

from engine.errors import InvalidRequest, ModelNotLoaded
from protocol.jsonrpc import generation as g
from server import translate
from server.jsonrpc.handlers.streaming import drain
from server.jsonrpc.server import IngotServer, dump, parse

EDIT_SYSTEM = (
    "You rewrite text as instructed. Reply with only the rewritten text that replaces the "
    "selection: no explanations, no code fences."
)
FENCE = re.compile(r"^\s*```[\w+-]*\n(.*?)\n?```\s*$", re.S)
INLINE_PREFIX_CHARS = 2000
INLINE_SUFFIX_CHARS = 1000
# ingot/edit without maxTokens: twice the selection's tokens plus this much.
EDIT_EXTRA_TOKENS = 64


def strip_fences(text: str) -> str:
    """The code in a model's answer: without a surrounding ``` fence, and without what small
    models add after the code (a closing fence they never opened, then an explanation)."""
    m = FENCE.match(text)
    if m:
        return m.group(1)
    lines = text.split("\n")
    if lines and lines[0].lstrip().startswith("```"):
        lines = lines[1:]  # an opening fence whose end is missing or followed by prose
    for i, line in enumerate(lines):
        if line.strip().startswith("```"):
            # The code ends where its fence does; each code line ended with a newline.
            return "".join(f"{code}\n" for code in lines[:i])
    return "\n".join(lines)


def _as_lines(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"


def fit_ending(original: str, rewrite: str) -> str:
    """The rewrite ends the way the selection did: with a newline or without one."""
    if not original.endswith("\n") and rewrite.endswith("\n"):
        return rewrite[:-1]
    return rewrite


def drop_restated_prefix(prefix: str, text: str) -> str:
    """Small models often repeat the text before the cursor before continuing it: drop the
    longest start of the completion that the document already has just before the cursor."""
    for k in range(min(len(prefix), len(text)), 0, -1):
        if prefix.endswith(text[:k]) and ("\n" in text[:k] or k == len(prefix) or k >= 8):
            return text[k:]
    return text


def offset_of(text: str, line: int, character: int) -> int:
    """UTF-16 LSP position -> index into a Python string (positions past the end clamp)."""
    lines = text.splitlines(keepends=True)
    if line >= len(lines):
        return len(text)
    start = sum(len(x) for x in lines[:line])
    col, units = 0, 0
    row = lines[line]
    while col < len(row) and units < character and row[col] not in "\r\n":
        units += 2 if ord(row[col]) > 0xFFFF else 1
        col += 1
    return start + col


SAMPLING_FIELDS = set(g.Sampling.model_fields)


async def pick_model(server: IngotServer, requested: str | None, quiet: bool = False) -> str | None:
    """The model for editor requests: the one asked for, the inline model, or the loaded model
    used most recently (asking the owning engine when forwarding)."""
    if requested:
        return requested
    if server.options.inline_model:
        return server.options.inline_model
    status = await server.ask_owner(lambda f: f.call_status())
    if status is not None:
        loaded = [m["id"] for m in status.get("loaded", [])]
        chosen = loaded[0] if loaded else None
    else:
        entries = server.service.loader.loaded()
        chosen = max(entries, key=lambda e: e.last_used).variant.id if entries else None
    if chosen is None and not quiet:
        raise ModelNotLoaded(
            "No model is loaded for editor requests.",
            hint="Load one (ingot/model/load) or set inlineModel.",
        )
    return chosen


async def edit_max_tokens(server: IngotServer, model: str, selection: str) -> int:
    """Enough for a rewrite of the selection (about twice its tokens, plus room for a short
    insertion) but not a ramble: capped by the model's max output."""
    info = await server.ask_owner(lambda f: f.call("ingot/model/info", {"model": model}))
    if info is not None:
        cap = int(info["maxOutputTokens"])
        tokens = -(-len(selection) // 3)  # no local model to count with: ~3 chars a token
    else:
        cap = server.service.resolve(model).max_output_tokens
        tokens = await server.service.count_tokens(model, prompt=selection) if selection else 0
    return max(1, min(cap, 2 * tokens + EDIT_EXTRA_TOKENS))


def register(server: IngotServer) -> None:
    @server.feature("ingot/chat")
    async def chat(params: Any) -> Any:
        p = parse(g.ChatParams, params)
        stream = server.service.chat(translate.chat_request(p))
        result = await drain(server, stream, p.partial_result_token)
        return dump(translate.generation_result(result))

    @server.feature("ingot/complete")
    async def complete(params: Any) -> Any:
        p = parse(g.CompleteParams, params)
        stream = server.service.complete(translate.completion_request(p))
        result = await drain(server, stream, p.partial_result_token)
        return dump(translate.generation_result(result))

    @server.feature("ingot/edit")
    async def edit(params: Any) -> Any:
        p = parse(g.EditParams, params)
        if p.uri not in server.workspace.text_documents:
            raise InvalidRequest(
                f"{p.uri} is not open.", hint="Send textDocument/didOpen first.", param="uri"
            )
        text = server.workspace.get_text_document(p.uri).source
        start = offset_of(text, p.range.start.line, p.range.start.character)
        end = offset_of(text, p.range.end.line, p.range.end.character)
        if end < start:
            raise InvalidRequest("range.end is before range.start.", param="range")
        original = text[start:end]
        messages = [
            {"role": "system", "content": EDIT_SYSTEM},
            # Whole lines read as a code block: end the selection with its newline in the prompt
            # (small models rewrite a clipped last line far less reliably).
            {
                "role": "user",
                "content": f"Instruction: {p.instruction}\n\nSelection:\n{_as_lines(original)}",
            },
        ]
        model = await pick_model(server, p.model)
        assert model is not None
        sampling = p.model_dump(by_alias=True, exclude_none=True, include=SAMPLING_FIELDS)
        if p.max_tokens is None:
            sampling["maxTokens"] = await edit_max_tokens(server, model, original)
        chat_params = {
            **sampling,
            "model": model,
            "messages": messages,
            "priority": "interactive",
            "kind": "edit",
            "partialResultToken": p.partial_result_token,
        }
        result = await server.generate("ingot/chat", chat_params)
        return dump(
            g.EditResult(
                uri=p.uri,
                range=p.range,
                original=original,
                text=fit_ending(original, strip_fences(result["text"])),
                generation=g.GenerationResult.model_validate(result),
            )
        )

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        params: types.InlineCompletionParams,
    ) -> types.InlineCompletionList:
        model = await pick_model(server, None, quiet=True)
        if model is None:
            return types.InlineCompletionList(items=[])  # nothing loaded: stay out of the way
        text = server.workspace.get_text_document(params.text_document.uri).source
        at = offset_of(text, params.position.line, params.position.character)
        prompt = text[max(0, at - INLINE_PREFIX_CHARS) : at]
        result = await server.generate(
            "ingot/complete",
            {
                "model": model,
                "prompt": prompt,
                "suffix": text[at : at + INLINE_SUFFIX_CHARS],
                "maxTokens": 48,
                "temperature": 0,
                "stop": ["\n\n"],
                "priority": "interactive",
                "kind": "inline",
            },
        )
        insert = drop_restated_prefix(prompt, strip_fences(result["text"]))
        if not insert.strip():
            return types.InlineCompletionList(items=[])
        pos = params.position
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(
                    insert_text=insert, range=types.Range(start=pos, end=pos)
                )
            ]
        )
