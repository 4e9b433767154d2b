"""Running a generation for a JSON-RPC request: partial results, cancellation with token counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from engine.requests import Delta, GenerationResult, GenerationStreamEvent
from server.jsonrpc.server import IngotServer


async def drain(
    server: IngotServer,
    stream: AsyncIterator[GenerationStreamEvent],
    partial_token: Any,
) -> GenerationResult:
    """Forward deltas as `$/progress` partial results; return the final result.

    When the request is cancelled ($/cancelRequest), closing the stream stops the token loop
    within one token; the cancel response then reports how many tokens were produced."""
    msg_id = server.protocol.msg_id
    tokens = 0
    try:
        async for ev in stream:
            if isinstance(ev, Delta):
                tokens = ev.tokens
                if partial_token is not None:
                    # The StreamDelta wire shape, built by hand: this runs once per token.
                    server.send_progress(partial_token, {"text": ev.text, "tokens": ev.tokens})
            else:
                return ev
    except asyncio.CancelledError:
        if msg_id is not None:
            server.protocol.cancel_data[msg_id] = {"kind": "cancelled", "tokens": tokens}
        raise
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    raise RuntimeError("the generation ended without a result")
