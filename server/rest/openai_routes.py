"""OpenAI routes under /v1: models, chat completions and legacy completions, streamed or not.

Thin handlers: validate the body (protocol.openai), map it to an engine request, run it through
EngineService and shape the answer. A client that disconnects cancels the handler (the runner
enables handler cancellation), which closes the engine's iterator and halts the token loop.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from engine.errors import GenerationFailed
from engine.generation import SamplingParams
from engine.requests import ChatRequest, GenerationResult, GenerationStreamEvent
from engine.requests import CompletionRequest as EngineCompletion
from engine.service import EngineService
from protocol import openai as oa
from server.rest.errors import ApiError, bad_request, sse_error_data
from server.rest.limits import check_max_tokens, check_stop
from server.rest.security import read_json
from server.rest.settings import RestSettings
from server.rest.sse import CLIENT_GONE, SseStream
from server.translate import request_telemetry

# Replies that may still turn out to be a tool call (see engine.chat.parse_tool_calls).
_CALL_PREFIXES = ("{", "[", "<tool_call>", "```json", "```\n{")
_CALL_PREFIX_MAX = max(map(len, _CALL_PREFIXES))


def _ttl(req: oa._Generation) -> float | None:
    if req.ttl is not None:
        return req.ttl
    return req.keep_alive


def _reject_unsupported(req: oa._Generation) -> None:
    bad = oa.unsupported_params(req)
    if bad:
        raise bad_request(
            f"Unsupported parameter(s): {', '.join(bad)}. Ingot does not implement them and will "
            "not ignore them silently (they change the output); remove them from the request.",
            param=bad[0],
            code="unsupported_parameter",
        )


def _sampling(req: oa._Generation, max_tokens: int | None) -> SamplingParams:
    temperature, top_p = req.temperature, req.top_p
    if top_p == 0:  # "only the most likely token": greedy
        temperature, top_p = 0.0, None
    seed = req.seed if req.seed is not None else req.random_seed
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    check_stop(stop)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=req.top_k,
        # ONNX Runtime GenAI takes a 32-bit seed; OpenAI allows any int64.
        seed=None if seed is None else seed % 2**31,
        stop=stop,
        repetition_penalty=req.repetition_penalty,
    )


def _timings(result: GenerationResult) -> oa.IngotExtra:
    return oa.IngotExtra(
        timings=request_telemetry(result.record).model_dump(mode="json", by_alias=True)
    )


def _usage(result: GenerationResult) -> oa.Usage:
    u = result.usage
    return oa.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=u.cached_tokens),
        completion_tokens_details=oa.CompletionTokensDetails(
            accepted_prediction_tokens=u.accepted_prediction_tokens,
            rejected_prediction_tokens=u.rejected_prediction_tokens,
        ),
    )


def _dump(model: BaseModel, drop_if_none: tuple[str, ...] = ("ingot", "usage")) -> Any:
    data = model.model_dump(mode="json")
    for key in drop_if_none:
        if data.get(key, 0) is None:
            del data[key]
    return data


async def _aclose(events: AsyncIterator[GenerationStreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def _final(events: AsyncIterator[GenerationStreamEvent]) -> GenerationResult:
    try:
        async for ev in events:
            if isinstance(ev, GenerationResult):
                return ev
    finally:
        await _aclose(events)
    raise GenerationFailed("The engine ended the generation without a result.")


class _Stream:
    """One streamed answer: ids, timestamps and the serialised chunk prefix shared by every chunk."""

    def __init__(self, request: web.Request, obj: str, cid: str, created: int, fp: str) -> None:
        self.request = request
        self.sse = SseStream(request, headers={"X-Request-Id": cid})
        self.base: dict[str, Any] = {"id": cid, "object": obj, "created": created}
        self.fp = fp
        self._head = self._tail = b""

    def set_model(self, model: str, text_key: bool = False) -> None:
        self.base["model"] = model
        self.base["system_fingerprint"] = self.fp
        # The hot path (one chunk per token) only splices the text into prebuilt bytes: the
        # event loop's work per token counts against decoding speed.
        head = json.dumps(self.base, separators=(",", ":"))[:-1] + ',"choices":[{"index":0,'
        head += '"text":' if text_key else '"delta":{"content":'
        self._head = b"data: " + head.encode()
        tail = ',"logprobs":null,"finish_reason":null}]}\n\n'
        self._tail = (tail if text_key else "}" + tail).encode()

    async def content(self, text: str) -> None:
        if not self.sse.opened:
            await self.sse.open()
        await self.sse.response.write(self._head + json.dumps(text).encode() + self._tail)

    async def chunk(self, **fields: Any) -> None:
        await self.sse.send_json({**self.base, **fields})

    async def choice(self, delta: dict[str, Any]) -> None:
        await self.chunk(choices=[_choice(delta=delta)])

    async def end(
        self, result: GenerationResult, include_usage: bool, text_key: bool = False
    ) -> None:
        """The one chunk with finish_reason, the usage chunk if asked for, then [DONE]. Ingot's
        timings ride on the last chunk before [DONE]."""
        if text_key:
            last = _choice(text="", finish_reason=_plain(result))
        else:
            last = _choice(delta={}, finish_reason=result.finish_reason)
        timings = _timings(result).model_dump(mode="json")
        if include_usage:
            await self.chunk(choices=[last])
            await self.chunk(choices=[], usage=_usage(result).model_dump(), ingot=timings)
        else:
            await self.chunk(choices=[last], ingot=timings)
        await self.sse.send("[DONE]")

    async def run(
        self, body: Coroutine[Any, Any, None], events: AsyncIterator[GenerationStreamEvent]
    ) -> web.StreamResponse:
        """Runs the stream body: errors before the first byte are ordinary HTTP errors; after it
        they become an error event; a vanished client just ends it. The engine iterator is
        always closed, which halts the token loop."""
        try:
            await body
        except CLIENT_GONE:
            return self.sse.response
        except Exception as e:
            if not self.sse.opened:
                raise
            try:
                await self.sse.send(sse_error_data(e, self.request))
            except CLIENT_GONE:
                return self.sse.response
        finally:
            await _aclose(events)
        return await self.sse.close()


def _choice(**fields: Any) -> dict[str, Any]:
    return {"index": 0, **fields, "logprobs": None, "finish_reason": fields.get("finish_reason")}


class OpenAIRoutes:
    def __init__(self, service: EngineService, settings: RestSettings) -> None:
        self.service = service
        self.settings = settings

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self.list_models)
        router.add_get("/v1/models/{model}", self.get_model)
        router.add_post("/v1/chat/completions", self.chat)
        router.add_post("/v1/completions", self.completions)

    @property
    def fingerprint(self) -> str:
        return f"ingot-{self.service.version}"

    # -- models --------------------------------------------------------------------------------
    def _created(self) -> dict[str, int]:
        return {e.manifest.id: int(e.manifest.created_at) for e in self.service.cache.list()}

    async def list_models(self, request: web.Request) -> web.Response:
        created = self._created()
        # What a client can use here: downloaded and runnable by an installed runtime, or loaded.
        views = [
            v
            for v in self.service.list_models(include_all=True)
            if v.loaded or (v.cached and v.runtime_unavailable is None)
        ]
        data = [
            oa.Model(
                id=v.variant.id, created=created.get(v.variant.id, 0), owned_by=v.variant.publisher
            )
            for v in views
        ]
        return web.json_response(oa.ModelList(data=data).model_dump(mode="json"))

    async def get_model(self, request: web.Request) -> web.Response:
        view = self.service.model_info(request.match_info["model"])
        why = None
        if not view.cached:
            why = f"is not downloaded. Run `ingot model download {view.variant.id}` first."
        elif view.runtime_unavailable:
            why = f"cannot run here: {view.runtime_unavailable}"
        if why and not view.loaded:
            raise ApiError(404, f"{view.variant.id} {why}", code="model_not_found", param="model")
        v = view.variant
        model = oa.Model(id=v.id, created=self._created().get(v.id, 0), owned_by=v.publisher)
        return web.json_response(model.model_dump(mode="json"))

    # -- shared --------------------------------------------------------------------------------
    def _max_tokens(self, req: oa.ChatCompletionRequest | oa.CompletionRequest) -> int | None:
        n = req.max_tokens
        if isinstance(req, oa.ChatCompletionRequest) and req.max_completion_tokens is not None:
            if n is not None and n != req.max_completion_tokens:
                raise bad_request(
                    "max_tokens and max_completion_tokens disagree; send only one of them.",
                    param="max_completion_tokens",
                )
            n = req.max_completion_tokens
        check_max_tokens(n, self.settings.max_tokens_limit)
        return n

    # -- chat ----------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request, limit=self.settings.max_body_bytes)
        req = oa.ChatCompletionRequest.model_validate(body)
        _reject_unsupported(req)
        if req.tool_choice not in (None, "none", "auto") and not req.tools:
            raise bad_request("tool_choice needs `tools` to choose from.", param="tool_choice")
        choice = req.tool_choice
        params = _sampling(req, self._max_tokens(req))
        if req.prediction is not None:
            try:
                predicted = req.prediction.text()
            except ValueError as e:
                raise bad_request(str(e), param="prediction") from e
            params = replace(params, prediction=predicted or None)
        ereq = ChatRequest(
            model=req.model,
            messages=[m.model_dump(exclude_none=True) for m in req.messages],
            params=params,
            tools=[t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,
            tool_choice=choice.model_dump() if isinstance(choice, BaseModel) else choice,
            response_format=req.response_format.model_dump(exclude_none=True, by_alias=True)
            if req.response_format
            else None,
            ttl_s=_ttl(req),
        )
        model_id = self.service.resolve(req.model).id
        events = self.service.chat(ereq)
        cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        if not req.stream:
            result = await _final(events)
            calls = [
                oa.ToolCallOut(id=c.id, function=oa.FunctionOut(name=c.name, arguments=c.arguments))
                for c in result.tool_calls
            ]
            message = oa.AssistantMessage(
                content=None if calls else result.text, tool_calls=calls or None
            )
            answer = oa.ChatCompletion(
                id=cid,
                created=created,
                model=result.model_id,
                choices=[oa.ChatChoice(message=message, finish_reason=result.finish_reason)],
                usage=_usage(result),
                system_fingerprint=self.fingerprint,
                ingot=_timings(result),
            )
            data = _dump(answer)
            if not calls:
                del data["choices"][0]["message"]["tool_calls"]
            return web.json_response(data)
        hold_all = bool(req.tools) and choice not in (None, "none", "auto")
        may_call = bool(req.tools) and choice != "none"
        stream = _Stream(request, "chat.completion.chunk", cid, created, self.fingerprint)
        stream.set_model(model_id)
        return await self._stream_chat(stream, events, hold_all, may_call, _usage_wanted(req))

    async def _stream_chat(
        self,
        stream: _Stream,
        events: AsyncIterator[GenerationStreamEvent],
        hold_all: bool,
        may_call: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        async def run() -> None:
            nonlocal hold_all
            # The first event comes before the response starts, so a prompt that does not fit or
            # a full queue is still an HTTP error rather than an error inside a 200 stream.
            ev: GenerationStreamEvent | None = await anext(events)
            await stream.choice({"role": "assistant", "content": ""})
            held: list[str] = []
            holding = may_call
            while ev is not None:
                if isinstance(ev, GenerationResult):
                    await self._finish_chat(stream, ev, "".join(held) if holding else "")
                    await stream.end(ev, include_usage)
                    return
                if not holding:
                    await stream.content(ev.text)
                else:
                    # A reply that may be a tool call is held back until it clearly is not one.
                    held.append(ev.text)
                    if not hold_all:
                        head = "".join(held).lstrip()
                        if head and not _may_be_call(head[:_CALL_PREFIX_MAX]):
                            holding = False
                            await stream.content("".join(held))
                        elif len(head) >= _CALL_PREFIX_MAX:
                            # It starts like a call: hold it to the end, with no more checks.
                            hold_all = True
                ev = await anext(events, None)

        return await stream.run(run(), events)

    async def _finish_chat(self, stream: _Stream, result: GenerationResult, held: str) -> None:
        if result.tool_calls:
            calls = [
                oa.ToolCallDelta(
                    index=i,
                    id=c.id,
                    type="function",
                    function=oa.ToolCallDeltaFunction(name=c.name, arguments=c.arguments),
                ).model_dump(mode="json", exclude_none=True)
                for i, c in enumerate(result.tool_calls)
            ]
            await stream.choice({"tool_calls": calls})
        elif held:
            await stream.content(held)

    # -- legacy completions ---------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request, limit=self.settings.max_body_bytes)
        req = oa.CompletionRequest.model_validate(body)
        _reject_unsupported(req)
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        model_id = self.service.resolve(req.model).id
        ereq = EngineCompletion(
            model=req.model,
            prompt=prompt,
            suffix=req.suffix,
            params=_sampling(req, self._max_tokens(req)),
            ttl_s=_ttl(req),
        )
        events = self.service.complete(ereq)
        cid, created = "cmpl-" + secrets.token_hex(12), int(time.time())
        if not req.stream:
            result = await _final(events)
            answer = oa.Completion(
                id=cid,
                created=created,
                model=result.model_id,
                system_fingerprint=self.fingerprint,
                choices=[oa.CompletionChoice(text=result.text, finish_reason=_plain(result))],
                usage=_usage(result),
                ingot=_timings(result),
            )
            return web.json_response(_dump(answer))
        stream = _Stream(request, "text_completion", cid, created, self.fingerprint)
        stream.set_model(model_id, text_key=True)

        async def run() -> None:
            async for ev in events:
                if isinstance(ev, GenerationResult):
                    await stream.end(ev, _usage_wanted(req), text_key=True)
                    return
                await stream.content(ev.text)

        return await stream.run(run(), events)


def _usage_wanted(req: oa._Generation) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _may_be_call(text: str) -> bool:
    return any(text.startswith(p) or p.startswith(text) for p in _CALL_PREFIXES)


def _plain(result: GenerationResult) -> Literal["stop", "length"]:
    return "length" if result.finish_reason == "length" else "stop"
