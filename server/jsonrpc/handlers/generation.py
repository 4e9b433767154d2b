"""Handlers for generation: ingot/chat, ingot/complete, ingot/edit, textDocument/inlineCompletion."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument

from engine.errors import InvalidRequest, ModelNotLoaded

# drop_restated_prefix moved into the engine with the rest of inline completions; the
# redundant alias keeps it importable from here.
from engine.inline import drop_restated_prefix as drop_restated_prefix
from engine.inline import inline_suggestion, plan_inline, strip_fences
from protocol.jsonrpc import generation as g
from server import translate
from server.jsonrpc.handlers.streaming import drain
from server.jsonrpc.server import IngotServer, dump, parse
from server.rest.settings import RestSettings

EDIT_SYSTEM = (
    "You rewrite text as instructed. Reply with only the rewritten text that replaces the "
    "selection: no explanations, no code fences."
)
# ingot/edit without maxTokens: twice the selection's tokens plus this much.
EDIT_EXTRA_TOKENS = 64


def _as_lines(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"


def fit_ending(original: str, rewrite: str) -> str:
    """The rewrite ends the way the selection did: with a newline or without one."""
    if not original.endswith("\n") and rewrite.endswith("\n"):
        return rewrite[:-1]
    return rewrite


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
        # Embedding models cannot write: editor requests take a chat model.
        loaded = [m["id"] for m in status.get("loaded", []) if m.get("task") != "embeddings"]
        chosen = loaded[0] if loaded else None
    else:
        entries = [e for e in server.service.loader.loaded() if not e.variant.is_embedding]
        chosen = max(entries, key=lambda e: e.last_used).variant.id if entries else None
    if chosen is None and not quiet:
        raise ModelNotLoaded(
            "No chat model is loaded for editor requests.",
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


def open_document(server: IngotServer, uri: str) -> TextDocument | None:
    """The open document at `uri`, or None. pygls keys open documents by their decoded URI (a
    client may send `c%3A` or `%20`), and its get_text_document() would read a document that is not
    open from disk — any path the caller names, `file:///dev/zero` included — so it is not used."""
    doc: TextDocument | None = server.workspace.text_documents.get(unquote(uri))
    return doc


def max_tokens_limit() -> int:
    """INGOT_MAX_TOKENS_LIMIT, the cap the REST routes apply too (the wire model's own bound is
    far higher, so a request cannot ask for a million tokens on this channel either)."""
    try:
        return RestSettings.from_env().max_tokens_limit
    except ValueError:
        return RestSettings.max_tokens_limit


def check_max_tokens(p: g.Sampling, limit: int) -> None:
    if p.max_tokens is not None and p.max_tokens > limit:
        raise InvalidRequest(
            f"maxTokens is {p.max_tokens}; this engine allows at most {limit}.",
            hint="Ask for fewer tokens, or raise INGOT_MAX_TOKENS_LIMIT for the engine.",
            param="maxTokens",
        )


def register(server: IngotServer) -> None:
    limit = max_tokens_limit()

    @server.feature("ingot/chat")
    async def chat(params: Any) -> Any:
        p = parse(g.ChatParams, params)
        check_max_tokens(p, limit)
        stream = server.service.chat(translate.chat_request(p))
        result = await drain(server, stream, p.partial_result_token)
        return dump(translate.generation_result(result))

    @server.feature("ingot/complete")
    async def complete(params: Any) -> Any:
        p = parse(g.CompleteParams, params)
        check_max_tokens(p, limit)
        stream = server.service.complete(translate.completion_request(p))
        result = await drain(server, stream, p.partial_result_token)
        return dump(translate.generation_result(result))

    @server.feature("ingot/edit")
    async def edit(params: Any) -> Any:
        p = parse(g.EditParams, params)
        check_max_tokens(p, limit)
        doc = open_document(server, p.uri)
        if doc is None:
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
            # A rewrite keeps most of the selection: its tokens are drafts the model verifies
            # several at a time (the answer is the same, only sooner).
            "prediction": p.prediction if p.prediction is not None else original,
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
        doc = open_document(server, params.text_document.uri)
        if doc is None:
            return types.InlineCompletionList(items=[])  # only what the editor showed us
        text = doc.source
        at = offset_of(text, params.position.line, params.position.character)
        before, after = text[:at], text[at:]
        plan = plan_inline(before, after)
        request: dict[str, Any] = {
            "model": model,
            "prompt": plan.prompt,
            "maxTokens": plan.max_tokens,
            "temperature": 0,
            "stop": list(plan.stop),
            "priority": "interactive",
            "kind": "inline",
        }
        if plan.suffix is not None:
            request["suffix"] = plan.suffix
        result = await server.generate("ingot/complete", request)
        insert = inline_suggestion(plan, before, after, result["text"])
        if not insert:
            return types.InlineCompletionList(items=[])
        pos = params.position
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(
                    insert_text=insert, range=types.Range(start=pos, end=pos)
                )
            ]
        )
