"""The caps every REST generation route applies alike (OpenAI and Ingot's native ones): max_tokens,
the number of messages, stop sequences, the telemetry `kind`, and who may ask for priority."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, get_args

from protocol import openai as oa
from protocol.jsonrpc import generation as g
from server.rest.errors import ApiError, bad_request
from server.rest.security import TRUSTED_CALLER

# What a request may say it is for: the wire model's fixed set (the request history keeps it).
KINDS: tuple[str, ...] = get_args(g.RequestKind)
P = TypeVar("P", g.ChatParams, g.CompleteParams)


def check_max_tokens(n: int | None, limit: int) -> None:
    if n is not None and n > limit:
        raise bad_request(
            f"max_tokens is {n}; this server allows at most {limit}.",
            param="max_tokens",
            code="max_tokens_too_large",
        )


def check_stop(stop: Sequence[str], param: str = "stop") -> None:
    if len(stop) > oa.MAX_STOP:
        raise bad_request(f"Send at most {oa.MAX_STOP} stop sequences.", param=param)
    for s in stop:
        if len(s) > oa.MAX_STOP_CHARS:
            raise bad_request(
                f"A stop sequence has {len(s)} characters; at most {oa.MAX_STOP_CHARS} are allowed.",
                param=param,
            )


def check_native(p: g.ChatParams | g.CompleteParams, max_tokens_limit: int) -> None:
    """The OpenAI routes' caps for `/ingot/v1/chat|complete` (their wire models allow more, for
    the editor's own stdio connection)."""
    check_max_tokens(p.max_tokens, max_tokens_limit)
    check_stop(p.stop or (), param="stop")
    if isinstance(p, g.ChatParams) and len(p.messages) > oa.MAX_MESSAGES:
        raise bad_request(f"Send at most {oa.MAX_MESSAGES} messages.", param="messages")
    if p.kind is not None and p.kind not in KINDS:
        raise ApiError(
            400,
            f"kind must be one of {', '.join(KINDS)} (got '{p.kind[:40]}').",
            param="kind",
        )


def rest_priority(p: P, trusted: bool) -> P:
    """A REST caller does not jump ahead of the editor: `interactive` runs as `chat` unless the
    caller is trusted — `trusted` (the server requires an API key, so only key holders get here)
    or the request proved the home secret (the guard says so in TRUSTED_CALLER), as a second
    editor window's forwarded requests do."""
    if p.priority == "interactive" and not (trusted or TRUSTED_CALLER.get()):
        return p.model_copy(update={"priority": "chat"})
    return p
