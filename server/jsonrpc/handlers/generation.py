"""Handlers for generation: ingot/chat, ingot/complete, ingot/edit, textDocument/inlineCompletion."""

from __future__ import annotations

import re
from typing import Any

from lsprotocol import types

from engine.errors import InvalidRequest, ModelNotLoaded
from engine.generation import SamplingParams
from engine.requests import ChatRequest, CompletionRequest
from engine.scheduler import PRIORITY_INTERACTIVE
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


def strip_fences(text: str) -> str:
    m = FENCE.match(text)
    return m.group(1) if m else text


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


def pick_model(server: IngotServer, requested: str | None) -> str:
    if requested:
        return requested
    if server.options.inline_model:
        return server.options.inline_model
    loaded = server.service.loader.loaded()
    if not loaded:
        raise ModelNotLoaded(
            "No model is loaded for editor requests.",
            hint="Load one (ingot/model/load) or set inlineModel.",
        )
    return max(loaded, key=lambda e: e.last_used).variant.id


def register(server: IngotServer) -> None:
    @server.feature("ingot/chat")
    async def chat(params: Any) -> Any:
        p = parse(g.ChatParams, params)
        req = ChatRequest(
            model=p.model,
            messages=[msg.model_dump(exclude_none=True) for msg in p.messages],
            params=translate.sampling(p),
            tools=p.tools,
            tool_choice=p.tool_choice,
            response_format=p.response_format,
            ttl_s=p.ttl,
        )
        result = await drain(server, server.service.chat(req), p.partial_result_token)
        return dump(translate.generation_result(result))

    @server.feature("ingot/complete")
    async def complete(params: Any) -> Any:
        p = parse(g.CompleteParams, params)
        req = CompletionRequest(
            model=p.model,
            prompt=p.prompt,
            suffix=p.suffix,
            params=translate.sampling(p),
            ttl_s=p.ttl,
        )
        result = await drain(server, server.service.complete(req), p.partial_result_token)
        return dump(translate.generation_result(result))

    @server.feature("ingot/edit")
    async def edit(params: Any) -> Any:
        p = parse(g.EditParams, params)
        doc = server.workspace.get_text_document(p.uri)
        if doc.uri not in server.workspace.text_documents:
            raise InvalidRequest(
                f"{p.uri} is not open.", hint="Send textDocument/didOpen first.", param="uri"
            )
        text = doc.source
        start = offset_of(text, p.range.start.line, p.range.start.character)
        end = offset_of(text, p.range.end.line, p.range.end.character)
        if end < start:
            raise InvalidRequest("range.end is before range.start.", param="range")
        original = text[start:end]
        messages = [
            {"role": "system", "content": EDIT_SYSTEM},
            {
                "role": "user",
                "content": f"Instruction: {p.instruction}\n\nSelection:\n{original}",
            },
        ]
        req = ChatRequest(
            model=pick_model(server, p.model),
            messages=messages,
            params=translate.sampling(p),
            priority=PRIORITY_INTERACTIVE,
            kind="edit",
        )
        result = await drain(server, server.service.chat(req), p.partial_result_token)
        return dump(
            g.EditResult(
                uri=p.uri,
                range=p.range,
                original=original,
                text=strip_fences(result.text),
                generation=translate.generation_result(result),
            )
        )

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        params: types.InlineCompletionParams,
    ) -> types.InlineCompletionList:
        if not server.options.inline_model and not server.service.loader.loaded():
            return types.InlineCompletionList(items=[])  # nothing loaded: stay out of the way
        doc = server.workspace.get_text_document(params.text_document.uri)
        text = doc.source
        at = offset_of(text, params.position.line, params.position.character)
        req = CompletionRequest(
            model=pick_model(server, None),
            prompt=text[max(0, at - INLINE_PREFIX_CHARS) : at],
            suffix=text[at : at + INLINE_SUFFIX_CHARS],
            params=SamplingParams(max_tokens=48, temperature=0, stop=("\n\n",)),
            priority=PRIORITY_INTERACTIVE,
            kind="inline",
        )
        result = await drain(server, server.service.complete(req), None)
        insert = strip_fences(result.text)
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
