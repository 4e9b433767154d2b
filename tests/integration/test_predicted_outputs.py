"""Predicted Outputs (speculative edits) on the real runtime and the real default model, in-process.

A prediction only makes greedy decoding faster: whatever the prediction (exactly the answer, the
answer until it parts midway, the selected code, unrelated text), the text and its token count
are those of the same request without one, the usage says how many drafts were kept and thrown
away, stop sequences still cut at the same token, and a cancel still lands at once. Sampled and
constrained requests ignore it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.errors import Cancelled
from engine.generation import SamplingParams
from engine.requests import ChatRequest, Delta, GenerationResult
from engine.scheduler import PRIORITY_INTERACTIVE
from engine.service import EngineService

MODEL = "smollm2-135m"
CODE = """class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, count):
        if name in self.items:
            self.items[name] += count
        else:
            self.items[name] = count

    def remove(self, name, count):
        if name not in self.items:
            raise KeyError(name)
        self.items[name] -= count
"""
# The Edit Selection prompt (server/jsonrpc/handlers/generation.py); SmolLM2-135M answers it by
# copying the class, then going on with an example of its own.
EDIT = [
    {
        "role": "system",
        "content": "You rewrite text as instructed. Reply with only the rewritten text that "
        "replaces the selection: no explanations, no code fences.",
    },
    {"role": "user", "content": f"Instruction: Add type hints.\n\nSelection:\n{CODE}"},
]
STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
UNRELATED = "The committee met on Tuesday to discuss the budget for the coming year. " * 6


@pytest.fixture
async def service(
    seeded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EngineService]:
    # The verifier is dropped with the batching session after this long idle: not mid-test on a
    # slow machine.
    monkeypatch.setenv("INGOT_BATCH_IDLE_S", "3600")
    svc = build_engine(EngineConfig(home=seeded_home, threads=2, queue_limit=4))
    await svc.start()
    try:
        await _warm_up(svc)
        yield svc
    finally:
        await svc.close()


async def _warm_up(svc: EngineService) -> None:
    """The first predicted request builds the verifier in the background and decodes without
    drafts until it is ready (about 1 s, longer on a loaded machine): the counts the tests check
    are those of a ready verifier, so wait until a prediction is used."""
    ref = await run(svc, STORY, max_tokens=24)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        res = await run(svc, STORY, ref.text, max_tokens=24)
        if res.usage.accepted_prediction_tokens > 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the verifier never became ready")


async def run(
    svc: EngineService,
    messages: list[dict[str, str]],
    prediction: str | None = None,
    *,
    max_tokens: int = 120,
    temperature: float = 0.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
) -> GenerationResult:
    sampling = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        stop=stop,
        prediction=prediction,
    )
    stream = svc.chat(ChatRequest(MODEL, messages, sampling, priority=PRIORITY_INTERACTIVE))
    deltas: list[str] = []
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for ev in stream:
            if isinstance(ev, Delta):
                deltas.append(ev.text)
            else:
                assert "".join(deltas) == ev.text
                return ev
    raise AssertionError("no result")


def same(a: GenerationResult, b: GenerationResult) -> None:
    assert a.text == b.text
    assert a.usage.completion_tokens == b.usage.completion_tokens
    assert a.finish_reason == b.finish_reason


async def test_greedy_text_is_the_same_whatever_the_prediction(service: EngineService) -> None:
    for messages in (EDIT, STORY):
        ref = await run(service, messages)
        assert ref.usage.completion_tokens >= 60
        assert ref.usage.accepted_prediction_tokens == ref.usage.rejected_prediction_tokens == 0
        half = ref.text[: len(ref.text) // 2]
        cases = {
            "exact": ref.text,
            "diverges midway": half + "\nand then something else entirely happened, the end.",
            "useless": UNRELATED,
            "the selection": CODE,
        }
        got = {name: await run(service, messages, pred) for name, pred in cases.items()}
        for name, res in got.items():
            try:
                same(res, ref)
            except AssertionError as e:
                raise AssertionError(f"prediction {name!r} changed the answer") from e
        n = ref.usage.completion_tokens
        exact = got["exact"].usage
        # Up to 7 drafts a pass, and the model's own token after them: most of the answer.
        assert exact.accepted_prediction_tokens >= n // 2, exact
        assert exact.rejected_prediction_tokens <= 2, exact
        midway = got["diverges midway"].usage
        assert 0 < midway.accepted_prediction_tokens < exact.accepted_prediction_tokens
        assert midway.rejected_prediction_tokens > 0
        assert got["useless"].usage.accepted_prediction_tokens == 0


async def test_an_edit_that_copies_the_selection_accepts_its_tokens(
    service: EngineService,
) -> None:
    ref = await run(service, EDIT)
    res = await run(service, EDIT, CODE)
    same(res, ref)
    assert CODE.splitlines()[0] in ref.text  # the model did copy the class
    assert res.usage.accepted_prediction_tokens >= ref.usage.completion_tokens // 3
    assert res.record.accepted_prediction_tokens == res.usage.accepted_prediction_tokens


async def test_stop_sequences_cut_at_the_same_token(service: EngineService) -> None:
    ref = await run(service, EDIT)
    stop = "def remove"
    assert stop in ref.text
    want = await run(service, EDIT, stop=(stop,))
    got = await run(service, EDIT, ref.text, stop=(stop,))
    assert want.text == ref.text[: ref.text.index(stop)]
    same(got, want)
    assert got.finish_reason == "stop"
    # max_tokens ends it at the same token too, inside a verifying pass.
    short = await run(service, EDIT, max_tokens=23)
    same(await run(service, EDIT, ref.text, max_tokens=23), short)


async def test_sampled_and_constrained_requests_ignore_the_prediction(
    service: EngineService,
) -> None:
    ref = await run(service, EDIT)
    seeded = await run(service, EDIT, temperature=0.8, seed=11)
    with_prediction = await run(service, EDIT, ref.text, temperature=0.8, seed=11)
    same(with_prediction, seeded)  # a seed gives the same text, prediction or not
    assert with_prediction.usage.accepted_prediction_tokens == 0
    sampled = await run(service, EDIT, ref.text, temperature=0.7)
    assert sampled.usage.accepted_prediction_tokens == 0
    assert sampled.usage.rejected_prediction_tokens == 0
    stream = service.chat(
        ChatRequest(
            MODEL,
            [{"role": "user", "content": "Give a JSON object with a key a."}],
            SamplingParams(max_tokens=30, temperature=0.0, prediction='{"a": 1}'),
            response_format={"type": "json_object"},
        )
    )
    async for ev in stream:
        if isinstance(ev, GenerationResult):
            assert ev.usage.accepted_prediction_tokens == 0


async def test_a_cancel_lands_at_once_and_the_model_keeps_working(
    service: EngineService,
) -> None:
    ref = await run(service, EDIT)
    got_first = asyncio.Event()

    async def consume() -> None:
        sampling = SamplingParams(max_tokens=400, temperature=0.0, prediction=ref.text * 3)
        async for ev in service.chat(ChatRequest(MODEL, EDIT, sampling)):
            if isinstance(ev, Delta):
                got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 30)
    t = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Cancelled):
        await task
    # Within a verify pass or two (tens of ms here; generous for a loaded machine).
    assert time.monotonic() - t < 3.0
    same(await run(service, EDIT, ref.text), ref)
