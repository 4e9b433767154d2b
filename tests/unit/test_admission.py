"""Admission before expensive work: the queue decides first, then the prompt is rendered and
tokenised inside the slot; a prompt far longer than the context is refused before tokenising."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.errors import ContextTooLong, EngineBusy
from engine.generate import MAX_CHARS_PER_TOKEN
from engine.requests import ChatRequest, CompletionRequest, GenerationResult
from engine.service import EngineService
from tests.unit.fakes import FakeInstance, FakeRuntime


class CountingInstance(FakeInstance):
    """Counts the work done before generation: renders and tokenisations."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.renders = 0
        self.counts = 0

    async def count_tokens(self, text: str) -> int:
        self.counts += 1
        return await super().count_tokens(text)

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        self.renders += 1
        return await super().render_chat(messages)


class CountingRuntime(FakeRuntime):
    async def load(self, variant: Any, folder: Path, **kw: Any) -> FakeInstance:
        self.loads += 1
        inst = CountingInstance(variant.id, self.words, self.delay)
        self.instances.append(inst)
        return inst


def _engine(tmp_path: Path, rt: FakeRuntime, queue_limit: int = 16) -> EngineService:
    folder = tmp_path / "model"
    folder.mkdir()
    entry = {
        "name": "tiny",
        "version": 1,
        "alias": "tiny",
        "display_name": "tiny",
        "publisher": "test",
        "device": "cpu",
        "framework": "onnx",
        "source": {"kind": "local", "path": str(folder)},
        "size_bytes": 1000,
        "context_length": 64,
        "license": "MIT",
        "capabilities": {"chat": True},
    }
    cat = tmp_path / "c.json"
    cat.write_text(json.dumps({"schema": 1, "variants": [entry]}), encoding="utf-8")
    return build_engine(
        EngineConfig(home=tmp_path / "home", extra_catalogs=(cat,), queue_limit=queue_limit),
        runtimes={"onnx-genai": rt},  # type: ignore[dict-item]
    )


async def _run(svc: EngineService, req: ChatRequest | CompletionRequest) -> GenerationResult:
    stream = svc.chat(req) if isinstance(req, ChatRequest) else svc.complete(req)
    async for ev in stream:
        if isinstance(ev, GenerationResult):
            return ev
    raise AssertionError("no result")


async def test_a_prompt_far_over_the_context_is_refused_before_tokenising(tmp_path: Path) -> None:
    rt = CountingRuntime()
    svc = _engine(tmp_path, rt)
    await svc.start()
    try:
        await _run(svc, CompletionRequest("tiny", "hello"))
        inst = rt.instances[0]
        assert isinstance(inst, CountingInstance)
        counted = inst.counts
        huge = "x" * (64 * MAX_CHARS_PER_TOKEN + 1)
        with pytest.raises(ContextTooLong) as e:
            await _run(svc, CompletionRequest("tiny", huge))
        assert e.value.data["prompt_chars"] == len(huge)
        assert inst.counts == counted  # never tokenised
        # A refused prompt never ran: the request history does not list it.
        assert [r.finish_reason for r in svc.telemetry.requests] == ["stop"]
    finally:
        await svc.close()


async def test_a_full_queue_refuses_before_rendering_or_tokenising(tmp_path: Path) -> None:
    rt = CountingRuntime(words=["a"] * 200, delay=0.01)
    svc = _engine(tmp_path, rt, queue_limit=1)
    await svc.start()
    try:
        await svc.load("tiny")
        inst = rt.instances[0]
        assert isinstance(inst, CountingInstance)
        msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
        running = asyncio.create_task(_run(svc, ChatRequest("tiny", msgs)))
        waiting = asyncio.create_task(_run(svc, ChatRequest("tiny", msgs)))
        async with asyncio.timeout(10):
            while True:
                entry = svc.loader.get_loaded(inst.variant_id)
                if entry is not None and entry.scheduler.queued == 1:
                    break
                await asyncio.sleep(0.01)
        # One runs (rendered and counted once), one waits (not rendered yet).
        assert (inst.renders, inst.counts) == (1, 1)
        with pytest.raises(EngineBusy):
            await _run(svc, ChatRequest("tiny", msgs))
        assert (inst.renders, inst.counts) == (1, 1)
        await asyncio.gather(running, waiting)
        assert (inst.renders, inst.counts) == (2, 2)
        # The refused one never ran: the history has the two that did, not a "cancelled" third.
        assert [r.finish_reason for r in svc.telemetry.requests] == ["stop", "stop"]
    finally:
        await svc.close()


async def test_token_counts_wait_in_the_queue_and_refuse_what_cannot_fit(tmp_path: Path) -> None:
    rt = CountingRuntime(words=["a"] * 200, delay=0.01)
    svc = _engine(tmp_path, rt, queue_limit=1)
    await svc.start()
    try:
        await svc.load("tiny")
        inst = rt.instances[0]
        assert isinstance(inst, CountingInstance)
        assert await svc.count_tokens("tiny", prompt="one two three") == 3
        with pytest.raises(ContextTooLong):
            await svc.count_tokens("tiny", prompt="x" * (64 * MAX_CHARS_PER_TOKEN + 1))
        msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
        running = asyncio.create_task(_run(svc, ChatRequest("tiny", msgs)))
        counting = asyncio.create_task(svc.count_tokens("tiny", messages=msgs))
        entry = svc.loader.get_loaded(inst.variant_id)
        assert entry is not None
        async with asyncio.timeout(10):
            while entry.scheduler.queued != 1:
                await asyncio.sleep(0.01)
        assert not counting.done(), "the count waits for the running generation's slot"
        with pytest.raises(EngineBusy):
            await svc.count_tokens("tiny", prompt="full queue")
        await running
        assert await counting == 2
    finally:
        await svc.close()
