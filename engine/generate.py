"""The generation pipeline: prompt, context check, queue slot, token stream, stop sequences, result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from engine.catalog.variant import ModelVariant
from engine.chat import PreparedChat, StopMatcher, parse_tool_calls
from engine.clock import Clock
from engine.errors import Cancelled, ContextTooLong, EngineBusy, IngotError
from engine.generation import (
    Constraint,
    GenerationRequest,
    RuntimeStats,
    SamplingParams,
    TextDelta,
)
from engine.loader import TtlLoader
from engine.requests import Delta, GenerationResult, GenerationStreamEvent, Usage
from engine.runtimes.base import ModelInstance
from engine.telemetry import RequestRecord, Telemetry


@dataclass(frozen=True)
class PromptPlan:
    prompt: str
    constraint: Constraint | None = None
    prepared: PreparedChat | None = None


PromptBuilder = Callable[[ModelInstance], Awaitable[PromptPlan]]


def check_context(n_prompt: int, max_tokens: int | None, context: int, model_id: str) -> None:
    """Honest context handling: never truncate silently; say both numbers and what to do."""
    if n_prompt >= context:
        raise ContextTooLong(
            f"The prompt is {n_prompt} tokens; {model_id} has a context of {context} tokens.",
            hint="Shorten the conversation or use a model with a longer context.",
            prompt_tokens=n_prompt,
            context_length=context,
            param="messages",
        )
    if max_tokens is not None and n_prompt + max_tokens > context:
        raise ContextTooLong(
            f"The prompt ({n_prompt} tokens) plus max_tokens ({max_tokens}) is more than "
            f"{model_id}'s context of {context} tokens.",
            hint=f"Lower max_tokens to at most {context - n_prompt}, or shorten the prompt.",
            prompt_tokens=n_prompt,
            max_tokens=max_tokens,
            context_length=context,
            param="max_tokens",
        )


# No tokenizer Ingot runs packs more characters than this into one token on average, so a
# prompt longer than context x this cannot fit, and is refused before it is tokenised.
MAX_CHARS_PER_TOKEN = 64


def check_prompt_chars(n_chars: int, context: int, model_id: str) -> None:
    if n_chars > context * MAX_CHARS_PER_TOKEN:
        raise ContextTooLong(
            f"The prompt is {n_chars} characters, far more than fits in {model_id}'s context "
            f"of {context} tokens.",
            hint="Shorten the prompt or the conversation.",
            prompt_chars=n_chars,
            context_length=context,
            param="messages",
        )


def feed_stops(matcher: StopMatcher, ev: TextDelta) -> tuple[int, str]:
    """(completion tokens so far, text safe to emit) after one delta. A batch is fed a token at
    a time, so a stop sequence ends both the text and the count at the token that completed it."""
    if not ev.pieces:
        return ev.tokens, matcher.feed(ev.text)
    first = ev.tokens - len(ev.pieces) + 1
    out = []
    for i, piece in enumerate(ev.pieces):
        out.append(matcher.feed(piece))
        if matcher.matched:
            return first + i, "".join(out)
    return ev.tokens, "".join(out)


async def run_generation(
    *,
    loader: TtlLoader,
    telemetry: Telemetry,
    clock: Clock,
    variant: ModelVariant,
    request_id: str,
    kind: str,
    priority: int,
    ttl_s: float | None,
    params: SamplingParams,
    build: PromptBuilder,
) -> AsyncIterator[GenerationStreamEvent]:
    requested = clock.monotonic()
    started_wall = clock.wall()
    async with loader.use(variant, ttl_s=ttl_s) as (entry, halt, load_s):
        inst = entry.instance
        matcher = StopMatcher(params.stop)
        parts: list[str] = []
        stats: RuntimeStats | None = None
        tokens = 0
        queue_s = 0.0
        n_prompt = 0

        def record(finish: str, st: RuntimeStats | None) -> RequestRecord:
            if st is None:
                now = clock.monotonic()
                st = RuntimeStats(n_prompt, tokens, now, None, now, "cancelled")
            return RequestRecord.from_stats(
                request_id=request_id,
                model_id=variant.id,
                runtime=variant.runtime,
                device=inst.device,
                kind=kind,
                started_at=started_wall,
                requested=requested,
                queue_s=queue_s,
                load_s=load_s,
                stats=st,
                finish_reason=finish,
                completion_tokens=tokens,
            )

        finished = refused = False
        try:
            # Admission first: a request the queue refuses costs no rendering or tokenising, and
            # those happen inside the slot, so a burst cannot run them all at once.
            async with entry.scheduler.slot(priority) as queue_s:
                try:
                    plan = await build(inst)
                    check_prompt_chars(len(plan.prompt), inst.context_length, variant.id)
                    n_prompt = await inst.count_tokens(plan.prompt)
                    check_context(n_prompt, params.max_tokens, inst.context_length, variant.id)
                except IngotError:
                    refused = True  # a bad prompt never ran: the request history skips it
                    raise
                request = GenerationRequest(plan.prompt, params, plan.constraint, priority)
                gen = inst.generate(request, halt)
                try:
                    async for ev in gen:
                        if isinstance(ev, TextDelta):
                            if matcher.matched:
                                continue  # tokens already in flight when the stop matched
                            tokens, out = feed_stops(matcher, ev)
                            if matcher.matched:
                                halt.halt("stop")
                            if out:
                                parts.append(out)
                                yield Delta(out, tokens)
                        else:
                            stats = ev
                finally:
                    await gen.aclose()
            if not matcher.matched and (tail := matcher.flush()):
                parts.append(tail)
                yield Delta(tail, tokens)
            assert stats is not None
            finish = "stop" if matcher.matched else stats.finish_reason
            if finish == "cancelled":
                raise Cancelled(
                    f"The generation was stopped ({halt.reason or 'cancelled'}) after "
                    f"{tokens} tokens.",
                    tokens=tokens,
                    reason=halt.reason,
                )
            text = "".join(parts)
            calls = parse_tool_calls(text, plan.prepared) if plan.prepared else []
            if calls:
                finish = "tool_calls"
            rec = record(finish, stats)
            telemetry.record(rec)
            finished = True
            yield GenerationResult(
                request_id=request_id,
                model_id=variant.id,
                text="" if calls else text,
                finish_reason=finish,
                usage=Usage(
                    n_prompt,
                    tokens,
                    rec.cached_tokens,
                    rec.accepted_prediction_tokens,
                    rec.rejected_prediction_tokens,
                ),
                record=rec,
                tool_calls=tuple(calls),
            )
        except EngineBusy:
            refused = True  # the queue was full: it never ran, so it is not "cancelled" either
            raise
        finally:
            if not finished and not refused:
                # Cancelled by the client (task cancelled / stream closed) or by an unload.
                telemetry.record(record("cancelled", stats))
