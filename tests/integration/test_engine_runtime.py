"""EngineService on the real ONNX Runtime GenAI runtime and the real default model, in-process.

The model runs in its worker process: these tests check what a caller of the façade relies on —
streaming, sampling, stop sequences, honest finish reasons and context errors, constrained
output, cancellation within a token, queueing, TTL, crash recovery, and an event loop that stays
responsive while the model computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.errors import (
    Cancelled,
    ContextTooLong,
    EngineBusy,
    GenerationFailed,
    InvalidRequest,
)
from engine.events import ModelStateEvent
from engine.generation import SamplingParams
from engine.requests import ChatRequest, CompletionRequest, Delta, GenerationResult
from engine.service import EngineService
from tests.conftest import DEFAULT_ONNX_ID

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


@pytest.fixture
async def service(seeded_home: Path) -> AsyncIterator[EngineService]:
    svc = build_engine(EngineConfig(home=seeded_home, threads=2, queue_limit=2))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


async def run(svc: EngineService, req: ChatRequest | CompletionRequest) -> GenerationResult:
    stream = svc.chat(req) if isinstance(req, ChatRequest) else svc.complete(req)
    deltas: list[str] = []
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for ev in stream:
            if isinstance(ev, Delta):
                deltas.append(ev.text)
            else:
                assert "".join(deltas) == ev.text or ev.tool_calls
                return ev
    raise AssertionError("no result")


def worker_pids(svc: EngineService) -> list[int]:
    entry = svc.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    pid = entry.instance.worker.pid  # type: ignore[attr-defined]
    assert isinstance(pid, int)
    return [pid]


async def test_chat_streams_and_reports_usage(service: EngineService) -> None:
    res = await run(service, ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=24)))
    assert res.text.strip()
    assert res.finish_reason in ("stop", "length")
    assert res.usage.completion_tokens > 0 and res.usage.prompt_tokens > 10
    rec = res.record
    assert rec.ttft_ms is not None and rec.ttft_ms > 0
    assert rec.decode_tps is not None and rec.decode_tps > 0


async def test_greedy_is_deterministic_and_seed_reproduces_sampling(
    service: EngineService,
) -> None:
    greedy = SamplingParams(max_tokens=20, temperature=0)
    a = await run(service, ChatRequest(MODEL, HELLO, greedy))
    b = await run(service, ChatRequest(MODEL, HELLO, greedy))
    assert a.text == b.text
    sampled = SamplingParams(max_tokens=20, temperature=1.2, top_p=0.95, seed=7)
    c = await run(service, ChatRequest(MODEL, HELLO, sampled))
    d = await run(service, ChatRequest(MODEL, HELLO, sampled))
    assert c.text == d.text


async def test_max_tokens_gives_length_and_stop_sequences_cut(service: EngineService) -> None:
    long_ask = [{"role": "user", "content": "Count from 1 to 50, separated by commas."}]
    res = await run(service, ChatRequest(MODEL, long_ask, SamplingParams(max_tokens=5)))
    assert res.finish_reason == "length" and res.usage.completion_tokens == 5
    res = await run(
        service, ChatRequest(MODEL, long_ask, SamplingParams(max_tokens=80, stop=("5",)))
    )
    assert res.finish_reason == "stop"
    assert "5" not in res.text and "4" in res.text
    # Tokens reach the engine in batches; the count still ends at the token that held the "5".
    upto = await service.count_tokens(MODEL, prompt=res.text + "5")
    assert abs(res.usage.completion_tokens - upto) <= 1


async def test_prompt_longer_than_context_is_an_error_with_both_counts(
    service: EngineService,
) -> None:
    huge = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(ContextTooLong) as e:
        await run(service, ChatRequest(MODEL, huge))
    assert e.value.data["prompt_tokens"] > e.value.data["context_length"] > 0
    with pytest.raises(ContextTooLong) as e2:
        await run(service, ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=10**6)))
    assert e2.value.data["max_tokens"] == 10**6


async def test_json_schema_output_is_valid(service: EngineService) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "is_capital": {"type": "boolean"},
        },
        "required": ["city", "is_capital"],
        "additionalProperties": False,
    }
    res = await run(
        service,
        ChatRequest(
            MODEL,
            [{"role": "user", "content": "Give the largest city of France as JSON."}],
            SamplingParams(max_tokens=200, temperature=0),
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        ),
    )
    assert res.finish_reason == "stop", res.text
    data = json.loads(res.text)
    assert set(data) == {"city", "is_capital"} and isinstance(data["is_capital"], bool)


async def test_forced_tool_call_matches_the_parameters(service: EngineService) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    res = await run(
        service,
        ChatRequest(
            MODEL,
            [{"role": "user", "content": "What is the weather in Paris?"}],
            SamplingParams(max_tokens=40, temperature=0),
            tools=[tool],
            tool_choice="required",
        ),
    )
    assert res.finish_reason == "tool_calls" and len(res.tool_calls) == 1
    call = res.tool_calls[0]
    assert call.name == "get_weather" and set(json.loads(call.arguments)) == {"city"}


async def test_cancel_stops_within_a_token_and_frees_the_model(service: EngineService) -> None:
    ask = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    stream = service.chat(ChatRequest(MODEL, ask, SamplingParams(max_tokens=400)))
    seen = 0
    async for ev in stream:
        assert isinstance(ev, Delta)
        seen = ev.tokens
        if seen >= 5:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    rec = service.telemetry.requests[-1]
    assert rec.finish_reason == "cancelled"
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None and not entry.active and entry.scheduler.running == 0
    # The worker is free at once: the next request is not stuck behind the cancelled one.
    res = await run(service, ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=4)))
    assert res.usage.completion_tokens == 4


async def test_cancelled_task_reports_tokens(service: EngineService) -> None:
    ask = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    got = asyncio.Event()

    async def consume() -> None:
        async for ev in service.chat(ChatRequest(MODEL, ask, SamplingParams(max_tokens=400))):
            if isinstance(ev, Delta) and ev.tokens >= 3:
                got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rec = service.telemetry.requests[-1]
    assert rec.finish_reason == "cancelled" and rec.completion_tokens >= 3


async def test_forced_unload_halts_a_running_generation(service: EngineService) -> None:
    ask = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    started = asyncio.Event()

    async def consume() -> GenerationResult:
        async for ev in service.chat(ChatRequest(MODEL, ask, SamplingParams(max_tokens=400))):
            if isinstance(ev, Delta):
                started.set()
            else:
                return ev
        raise AssertionError

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    pid = worker_pids(service)[0]
    assert await service.unload(MODEL, force=True)
    with pytest.raises(Cancelled):
        await task
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_queue_is_bounded(service: EngineService) -> None:
    ask = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    await service.load(MODEL)
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    slots = entry.scheduler.concurrency
    assert slots > 1  # the worker interleaves sequences
    tasks = [
        asyncio.create_task(run(service, ChatRequest(MODEL, ask, SamplingParams(max_tokens=30))))
        for _ in range(slots + 3)
    ]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    busy = [r for r in done if isinstance(r, EngineBusy)]
    ok = [r for r in done if isinstance(r, GenerationResult)]
    # `slots` run, two may wait (queue_limit=2), the rest is refused at once.
    assert len(busy) == 1 and len(ok) == slots + 2


async def test_an_inline_completion_goes_ahead_of_a_long_chat(service: EngineService) -> None:
    """Latency classes: an interactive request typed while a long chat streams is served at once
    (the worker steps it first), and the chat carries on afterwards."""
    from engine.scheduler import PRIORITY_INTERACTIVE

    await service.load(MODEL)
    story = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    chat_tokens: list[int] = []
    streaming = asyncio.Event()

    async def long_chat() -> GenerationResult:
        async for ev in service.chat(
            ChatRequest(MODEL, story, SamplingParams(max_tokens=300, temperature=0))
        ):
            if isinstance(ev, Delta):
                chat_tokens.append(ev.tokens)
                if ev.tokens >= 5:
                    streaming.set()
            else:
                return ev
        raise AssertionError

    chat = asyncio.create_task(long_chat())
    await asyncio.wait_for(streaming.wait(), 30)
    at_start = chat_tokens[-1]
    inline = await run(
        service,
        CompletionRequest(
            MODEL,
            "def add(a, b):\n    return",
            params=SamplingParams(max_tokens=12, temperature=0),
            priority=PRIORITY_INTERACTIVE,
            kind="inline",
        ),
    )
    during = chat_tokens[-1] - at_start
    assert not chat.done()  # the chat was still streaming when the completion was done
    # Strict priority: while the completion ran, the chat advanced by at most a few tokens.
    assert inline.usage.completion_tokens > 0 and during <= 4, during
    result = await chat
    assert result.usage.completion_tokens == 300 or result.finish_reason == "stop"


STORY = [{"role": "user", "content": "Write a long story about a lighthouse."}]


async def batching_ready(service: EngineService, ready: bool = True) -> Any:
    """The loaded model's entry once its worker's batching session is (or is no longer) there;
    overlapping two short requests is what builds it."""
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    short = ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=8, temperature=0))
    deadline = time.monotonic() + 30
    while (m := await entry.instance.runtime_metrics()).get("batching_ready") != float(ready):
        assert time.monotonic() < deadline, f"the batching session stayed as it was: {m}"
        if ready:
            await asyncio.gather(run(service, short), run(service, short))
        await asyncio.sleep(0.2)
    return entry


def start_streaming(
    service: EngineService, params: SamplingParams
) -> tuple[asyncio.Task[GenerationResult], list[int]]:
    """A story chat running in a task, and the token counts its deltas reported so far."""
    progress: list[int] = []

    async def chat() -> GenerationResult:
        async for ev in service.chat(ChatRequest(MODEL, STORY, params)):
            if isinstance(ev, Delta):
                progress.append(ev.tokens)
            else:
                return ev
        raise AssertionError("the chat ended without a result")

    return asyncio.create_task(chat()), progress


async def until_tokens(progress: list[int], n: int) -> None:
    while not progress or progress[-1] < n:
        await asyncio.sleep(0.005)


async def test_overlapping_requests_are_batched_and_answer_as_they_would_alone(
    service: EngineService,
) -> None:
    await service.load(MODEL)
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    asks = [
        "Name three colours.",
        "What is the capital of France? Explain its history.",
        "Write a haiku about rain.",
        "How do airplanes fly?",
    ]
    params = SamplingParams(max_tokens=24, temperature=0)

    def req(ask: str) -> ChatRequest:
        return ChatRequest(MODEL, [{"role": "user", "content": ask}], params)

    solo = [(await run(service, req(a))).text for a in asks]
    await batching_ready(service)
    before = (await entry.instance.runtime_metrics())["batched_tokens"]
    together = await asyncio.gather(*(run(service, req(a)) for a in asks))
    after = await entry.instance.runtime_metrics()
    # Greedy decoding gives token-for-token the same answers batched as alone, also for rows
    # that copied the system prompt's cache from a row already there.
    assert [r.text for r in together] == solo
    assert sum(r.usage.cached_tokens for r in together) >= 20
    # The same request three times at once: later rows reuse all but the last two prompt tokens.
    same = await asyncio.gather(*(run(service, req(asks[1])) for _ in range(3)))
    assert [r.text for r in same] == [solo[1]] * 3
    assert max(r.usage.cached_tokens for r in same) == same[0].usage.prompt_tokens - 2
    assert after["batched_tokens"] - before >= 2 * 20  # most of it ran as batch rows
    assert after["batched_rows"] == 0  # and the rows are gone once the requests are

    # A request running alone moves into the batch, KV cache and all, when a second arrives
    # (so the model never alternates between two sessions), and still answers as it would
    # alone; a batch row stops within a token of its cancel and its neighbour carries on.
    long = SamplingParams(max_tokens=120, temperature=0)
    alone = (await run(service, ChatRequest(MODEL, STORY, long))).text
    first, progress = start_streaming(service, long)
    await until_tokens(progress, 10)
    assert (await entry.instance.runtime_metrics())["batched_rows"] == 0  # alone: its own
    row = service.chat(ChatRequest(MODEL, STORY, SamplingParams(max_tokens=400)))
    async for ev in row:
        assert isinstance(ev, Delta)
        if ev.tokens >= 5:
            break
    assert (await entry.instance.runtime_metrics())["batched_rows"] == 2
    await row.aclose()  # type: ignore[attr-defined]
    assert service.telemetry.requests[-1].finish_reason == "cancelled"
    assert (await entry.instance.runtime_metrics())["batched_rows"] == 1
    done = await first
    assert done.text == alone
    assert (await entry.instance.runtime_metrics())["batched_rows"] == 0


async def test_an_inline_completion_decodes_alone_inside_a_batch(
    service: EngineService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Latency classes hold inside the batch: an inline completion that joins a batched chat
    decodes on its own (the chat's row waits), then the chat carries on unchanged."""
    from engine.scheduler import PRIORITY_INTERACTIVE

    monkeypatch.setenv("INGOT_TOKEN_FLUSH_MS", "0")  # the worker reports every token at once
    await service.load(MODEL)
    entry = await batching_ready(service)
    long = SamplingParams(max_tokens=150, temperature=0)
    alone = (await run(service, ChatRequest(MODEL, STORY, long))).text
    task, progress = start_streaming(service, long)
    await until_tokens(progress, 10)
    before = progress[-1]
    inline = await run(
        service,
        CompletionRequest(
            MODEL,
            "def add(a, b):\n    return",
            params=SamplingParams(max_tokens=12, temperature=0),
            priority=PRIORITY_INTERACTIVE,
            kind="inline",
        ),
    )
    during = progress[-1] - before
    assert inline.usage.completion_tokens >= 6
    assert during <= 3, during  # batched alongside, the chat would have gained ~12
    assert (await entry.instance.runtime_metrics())["batch_steps"] > 0
    assert (await task).text == alone


async def test_an_idle_batch_gives_its_memory_back(
    service: EngineService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGOT_BATCH_IDLE_S", "2")
    await service.load(MODEL)
    worker = psutil.Process(worker_pids(service)[0])
    alone = worker.memory_info().rss
    await batching_ready(service)
    batched = worker.memory_info().rss
    assert batched > alone + 100 * 2**20  # the batching session's copy of the weights
    await batching_ready(service, ready=False)
    assert worker.memory_info().rss < batched - 100 * 2**20
    await batching_ready(service)  # and the next overlap builds it again


async def test_a_prompt_that_starts_like_the_last_one_prefills_only_the_rest(
    service: EngineService,
) -> None:
    """The worker keeps its last generator: the next request rewinds it to the prefix they share
    (here the chat template's system prompt, then a conversation's previous prompt) and
    prefills only the rest. The answers are token-for-token those of a fresh generator, and the usage says how
    many prompt tokens came from the cache."""
    params = SamplingParams(max_tokens=24, temperature=0)
    first = [{"role": "user", "content": "Name three colours."}]
    second = [{"role": "user", "content": "Write a haiku about rain."}]

    async def cold(messages: list[dict[str, str]]) -> GenerationResult:
        if service.loader.get_loaded(DEFAULT_ONNX_ID) is not None:
            await service.unload(MODEL, force=True)  # a fresh worker keeps nothing
        await service.load(MODEL)
        return await run(service, ChatRequest(MODEL, messages, params))

    cold_first, cold_second = await cold(first), await cold(second)
    assert cold_second.usage.cached_tokens == 0
    turn = [*first, {"role": "assistant", "content": cold_first.text}, *second]
    cold_turn = await cold(turn)

    await cold(first)
    warm_second = await run(service, ChatRequest(MODEL, second, params))
    assert warm_second.text == cold_second.text
    system = warm_second.usage.cached_tokens  # the template's default system prompt
    assert 10 <= system < warm_second.usage.prompt_tokens
    assert warm_second.record.cached_tokens == system

    # A conversation's next turn reuses the previous prompt (not the answer generated after
    # it: token-by-token steps round differently from a prefill, and would change the text).
    await cold(first)
    warm_turn = await run(service, ChatRequest(MODEL, turn, params))
    assert warm_turn.text == cold_turn.text
    assert warm_turn.usage.cached_tokens == cold_first.usage.prompt_tokens

    # A request with little in common (an inline completion typed during a chat) gets a slot of
    # its own: the conversation's prefix is still there for its next turn.
    await cold(first)
    other = [
        {"role": "system", "content": "Translate to French."},
        {"role": "user", "content": "Hi"},
    ]
    assert (await run(service, ChatRequest(MODEL, other, params))).usage.cached_tokens < 16
    again = await run(service, ChatRequest(MODEL, turn, params))
    assert again.text == cold_turn.text
    assert again.usage.cached_tokens == cold_first.usage.prompt_tokens

    # Other search options need a generator made with them: no reuse, and nothing breaks.
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    hits = (await entry.instance.runtime_metrics())["prompt_cache_hits"]
    sampled = SamplingParams(max_tokens=8, temperature=0.8, top_k=20)
    got = await run(service, ChatRequest(MODEL, second, sampled))
    assert got.usage.cached_tokens == 0 and got.usage.completion_tokens > 0
    assert (await entry.instance.runtime_metrics())["prompt_cache_hits"] == hits


async def test_two_chats_share_the_model_turn_by_turn(service: EngineService) -> None:
    await service.load(MODEL)
    story = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    first_token_of_second: list[int] = []
    first_progress: list[int] = []

    async def chat(out: list[int]) -> None:
        async for ev in service.chat(
            ChatRequest(MODEL, story, SamplingParams(max_tokens=60, temperature=0))
        ):
            if isinstance(ev, Delta):
                out.append(ev.tokens)

    a = asyncio.create_task(chat(first_progress))
    while not first_progress:
        await asyncio.sleep(0.01)
    b = asyncio.create_task(chat(first_token_of_second))
    while not first_token_of_second:
        await asyncio.sleep(0.01)
    # The second started streaming long before the first was done.
    assert first_progress[-1] < 50
    await asyncio.gather(a, b)


async def test_ttl_zero_unloads_after_the_request_and_the_process_ends(
    service: EngineService,
) -> None:
    await service.load(MODEL, ttl_s=0)
    pid = worker_pids(service)[0]
    await run(service, ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=3)))
    assert service.loader.get_loaded(DEFAULT_ONNX_ID) is None
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not psutil.pid_exists(pid)


async def test_a_crashed_worker_fails_cleanly_and_the_next_request_reloads(
    service: EngineService,
) -> None:
    events: list[ModelStateEvent] = []
    service.events.add_listener(events.append)
    ask = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    started = asyncio.Event()

    async def consume() -> None:
        async for ev in service.chat(ChatRequest(MODEL, ask, SamplingParams(max_tokens=400))):
            if isinstance(ev, Delta):
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    os.kill(worker_pids(service)[0], signal.SIGKILL)
    with pytest.raises(GenerationFailed) as e:
        await task
    assert "signal 9" in e.value.message
    failed = [ev for ev in events if ev.state == "failed"]
    assert failed and "signal 9" in (failed[-1].reason or "")
    assert service.loader.get_loaded(DEFAULT_ONNX_ID) is None
    res = await run(service, ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=4)))
    assert res.usage.completion_tokens == 4


async def test_event_loop_stays_responsive_during_a_long_prefill(service: EngineService) -> None:
    """The model computes in its own process: the engine's loop keeps ticking meanwhile."""
    await service.load(MODEL)
    prompt = "The quick brown fox jumps over the lazy dog. " * 150  # ~1500 tokens
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    res = await run(service, CompletionRequest(MODEL, prompt, params=SamplingParams(max_tokens=2)))
    took = time.perf_counter() - t0
    stop = True
    await tick
    assert res.usage.prompt_tokens > 1000
    # In-process, the GIL-holding prefill froze the loop for the whole prefill; here the longest
    # stall is a small fraction of it.
    assert max(gaps) < took / 3, (max(gaps), took)


async def test_the_models_memory_is_its_workers(service: EngineService) -> None:
    view = await service.load(MODEL)
    worker_rss = psutil.Process(worker_pids(service)[0]).memory_info().rss
    assert worker_rss > 50 * 2**20
    assert view.memory_bytes is not None and view.memory_bytes >= worker_rss * 0.5


async def test_regex_and_grammar_constraints(service: EngineService) -> None:
    ask = [{"role": "user", "content": "Is Paris in France? Answer yes or no."}]
    res = await run(
        service,
        ChatRequest(
            MODEL,
            ask,
            SamplingParams(max_tokens=10, temperature=0),
            response_format={"type": "regex", "regex": "(yes|no)"},
        ),
    )
    assert res.text in ("yes", "no")
    grammar = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"\n'
    res = await run(
        service,
        ChatRequest(
            MODEL,
            ask,
            SamplingParams(max_tokens=20, temperature=0),
            response_format={"type": "grammar", "grammar": grammar},
        ),
    )
    assert res.text in ("The answer is yes.", "The answer is no.")
    with pytest.raises(InvalidRequest):
        await run(service, ChatRequest(MODEL, ask, response_format={"type": "regex"}))


async def test_a_lone_surrogate_is_a_clear_error_and_the_model_keeps_working(
    service: EngineService,
) -> None:
    bad = [{"role": "user", "content": "half a pair: \ud800 here"}]
    with pytest.raises(InvalidRequest) as e:
        await run(service, ChatRequest(MODEL, bad))
    assert "not valid Unicode" in e.value.message
    res = await run(service, ChatRequest(MODEL, HELLO, SamplingParams(max_tokens=3)))
    assert res.usage.completion_tokens == 3


async def test_a_burst_that_arrives_before_the_batch_is_built_moves_into_it(
    service: EngineService,
) -> None:
    """The first overlap builds the batching session in the background (~0.3 s). The first
    two requests of a burst on a cold model start at once; chat requests after them wait for
    the session and join it as rows; the first two then move in too, so all finish batched."""
    await service.load(MODEL)
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    assert (await entry.instance.runtime_metrics())["batching_ready"] == 0
    params = SamplingParams(max_tokens=160, temperature=0)
    alone = (await run(service, ChatRequest(MODEL, STORY, params))).text
    burst = await asyncio.gather(
        *(run(service, ChatRequest(MODEL, STORY, params)) for _ in range(4))
    )
    after = await entry.instance.runtime_metrics()
    assert after["batching_ready"] == 1
    # Most of their tokens came from the batch.
    assert after["batched_tokens"] >= 240, after
    assert [r.text for r in burst] == [alone] * 4
    # The first started at once (on the generator `alone` left), the second too (on a fresh
    # one); the other two waited for the session and joined it as rows, the fourth copying
    # the prompt from the third: two reused a prefix (prefilled alone, only the first could).
    assert sum(r.usage.cached_tokens > 0 for r in burst) >= 2, [r.usage for r in burst]


async def test_an_interactive_burst_on_a_cold_model_moves_into_the_batch_once_it_is_built(
    service: EngineService,
) -> None:
    """Inline completions never wait for the batching session: they start as singles taking
    turns, and move into the session together once it is ready."""
    from engine.scheduler import PRIORITY_INTERACTIVE

    await service.load(MODEL)
    entry = service.loader.get_loaded(DEFAULT_ONNX_ID)
    assert entry is not None
    assert (await entry.instance.runtime_metrics())["batching_ready"] == 0

    def completion(i: int) -> CompletionRequest:
        return CompletionRequest(
            MODEL,
            f"# Story {i}\nOnce upon a time, in a lighthouse by the sea,",
            params=SamplingParams(max_tokens=160, temperature=0),
            priority=PRIORITY_INTERACTIVE,
            kind="inline",
        )

    results = await asyncio.gather(*(run(service, completion(i)) for i in range(3)))
    after = await entry.instance.runtime_metrics()
    assert after["batching_ready"] == 1
    produced = sum(r.usage.completion_tokens for r in results)
    # Nothing waited (no row was prefilled in the batch: all three moved in, KV and all), and
    # most of the tokens still came from the batch.
    assert after["batched_tokens"] >= produced / 2, (after, produced)
