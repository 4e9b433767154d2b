"""Ingot's native generation routes: the JSON-RPC params and results over HTTP with SSE deltas.

`POST /ingot/v1/chat` and `POST /ingot/v1/complete` take exactly the camelCase params of
`ingot/chat` and `ingot/complete` and stream `event: delta` (StreamDelta) then `event: done`
(GenerationResult) or `event: error` (OpenAI error object). A second engine on the same home
forwards its editor's requests here, so both see identical semantics; a client that disconnects
stops the generation within one token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from engine.requests import Delta, GenerationStreamEvent
from engine.service import EngineService
from protocol.jsonrpc import generation as g
from server import translate
from server.rest.errors import to_api_error
from server.rest.limits import P, check_native, rest_priority
from server.rest.security import read_json
from server.rest.settings import RestSettings
from server.rest.sse import CLIENT_GONE, SseStream

PREFIX = "/ingot/v1"


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


class NativeRoutes:
    def __init__(self, service: EngineService, settings: RestSettings) -> None:
        self.service = service
        self.settings = settings

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post(f"{PREFIX}/chat", self.chat)
        router.add_post(f"{PREFIX}/complete", self.complete)

    async def _params(self, request: web.Request, model: type[Any]) -> Any:
        # The same guarded reader as every other route: size limit, depth, surrogates, and an
        # OpenAI-shaped 400 that names the problem (pydantic errors become 400s in errors.py).
        body = await read_json(request, limit=self.settings.max_body_bytes)
        return self._limited(model.model_validate(body))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        p = await self._params(request, g.ChatParams)
        return await self._stream(request, self.service.chat(translate.chat_request(p)))

    async def complete(self, request: web.Request) -> web.StreamResponse:
        p = await self._params(request, g.CompleteParams)
        return await self._stream(request, self.service.complete(translate.completion_request(p)))

    def _limited(self, p: P) -> P:
        check_native(p, self.settings.max_tokens_limit)
        return rest_priority(p, trusted=bool(self.settings.api_key))

    async def _stream(
        self, request: web.Request, events: AsyncIterator[GenerationStreamEvent]
    ) -> web.StreamResponse:
        sse = SseStream(request)
        try:
            async for ev in events:
                if isinstance(ev, Delta):
                    await sse.send_json(
                        _dump(g.StreamDelta(text=ev.text, tokens=ev.tokens)), "delta"
                    )
                else:
                    await sse.send_json(_dump(translate.generation_result(ev)), "done")
        except CLIENT_GONE:
            pass  # the client left: closing the stream below halts the token loop
        except Exception as e:
            if not sse.opened:
                raise  # nothing sent yet: answer with a normal error response
            with contextlib.suppress(*CLIENT_GONE):
                await sse.send_json(to_api_error(e, request).body(), "error")
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        return await sse.close()
