"""The interactive console (playground): sessions that keep their history and token count."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidRequest
from protocol.jsonrpc import generation as g
from server.jsonrpc.server import IngotServer, dump, parse

MAX_SESSIONS = 64


@dataclass
class Session:
    id: str
    model: str  # resolved variant id
    context_length: int
    params: dict[str, Any]  # camelCase sampling params
    system: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0

    def history(self) -> list[dict[str, Any]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def wire(self) -> g.ConsoleSession:
        return g.ConsoleSession(
            session_id=self.id,
            model=self.model,
            context_length=self.context_length,
            tokens=self.tokens,
            messages=[g.ChatMessage.model_validate(m) for m in self.history()],
        )


def register(server: IngotServer) -> None:
    sessions: dict[str, Session] = {}

    def get(session_id: str) -> Session:
        s = sessions.get(session_id)
        if s is None:
            raise InvalidRequest(
                f"No console session '{session_id}'.",
                hint="Open one with ingot/console/open.",
                param="sessionId",
            )
        return s

    async def model_facts(model: str) -> tuple[str, int]:
        info = await server.ask_owner(lambda f: f.call("ingot/model/info", {"model": model}))
        if info is not None:
            return info["id"], int(info["contextLength"])
        variant = server.service.runnable(model)
        return variant.id, variant.context_length

    @server.feature("ingot/console/open")
    async def open_(params: Any) -> Any:
        p = parse(g.ConsoleOpenParams, params)
        model_id, context = await model_facts(p.model)
        if len(sessions) >= MAX_SESSIONS:
            sessions.pop(next(iter(sessions)))
        s = Session(
            id=f"console-{secrets.token_hex(6)}",
            model=model_id,
            context_length=context,
            params=p.model_dump(by_alias=True, exclude_none=True, exclude={"model", "system"}),
            system=p.system,
        )
        sessions[s.id] = s
        return dump(s.wire())

    @server.feature("ingot/console/send")
    async def send(params: Any) -> Any:
        p = parse(g.ConsoleSendParams, params)
        s = get(p.session_id)
        turn = [*s.messages, {"role": "user", "content": p.message}]
        head = [{"role": "system", "content": s.system}] if s.system else []
        result = await server.generate(
            "ingot/chat",
            {
                **s.params,
                "model": s.model,
                "messages": head + turn,
                "kind": "console",
                "partialResultToken": p.partial_result_token,
            },
        )
        generation = g.GenerationResult.model_validate(result)
        # The history only changes when the answer completed: a cancelled turn leaves no trace.
        s.messages = [*turn, {"role": "assistant", "content": generation.text}]
        s.tokens = generation.usage.total_tokens
        return dump(g.ConsoleSendResult(session=s.wire(), generation=generation))

    @server.feature("ingot/console/history")
    async def history(params: Any) -> Any:
        return dump(get(parse(g.ConsoleRef, params).session_id).wire())

    @server.feature("ingot/console/reset")
    async def reset(params: Any) -> Any:
        s = get(parse(g.ConsoleRef, params).session_id)
        s.messages = []
        s.tokens = 0
        return dump(s.wire())

    @server.feature("ingot/console/close")
    async def close(params: Any) -> Any:
        p = parse(g.ConsoleRef, params)
        get(p.session_id)
        sessions.pop(p.session_id, None)
        return None
