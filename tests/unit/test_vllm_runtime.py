"""The vLLM runtime without vLLM: request mapping, metrics, selection, and streaming against a fake
server (httpx's mock transport speaking vLLM's wire format)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
import pytest

from engine.catalog.variant import KvShape, ModelSource
from engine.errors import GenerationFailed, InvalidRequest, LoadFailed
from engine.generation import (
    Constraint,
    GenerationRequest,
    RuntimeStats,
    SamplingParams,
    TextDelta,
)
from engine.hardware import HardwareProfile
from engine.runtimes.base import HaltFlag
from engine.runtimes.vllm import VllmRuntime
from engine.runtimes.vllm_client import VllmClient, completion_body, parse_metrics
from engine.runtimes.vllm_install import VllmInstall
from engine.runtimes.vllm_instance import VllmInstance
from engine.runtimes.vllm_server import VllmServer
from tests.unit.fakes import variant

KV = KvShape(30, 3, 64, 2)
HW = HardwareProfile("test", 2, 2, 24 * 1024**3, 20 * 1024**3)


def vllm_variant(**kw: Any) -> Any:
    base: dict[str, Any] = {"framework": "vllm", "size": 541_619_399, "context_length": 8192}
    base.update(kw)
    return variant("smol-vllm", kv=KV, **base)


# -- request mapping -------------------------------------------------------------------------------
def test_sampling_params_map_to_vllm_fields_and_unset_ones_stay_out() -> None:
    req = GenerationRequest(
        "hi",
        SamplingParams(
            max_tokens=5,
            temperature=0.0,
            top_p=0.9,
            top_k=40,
            seed=7,
            stop=("\n",),
            repetition_penalty=1.1,
        ),
    )
    body = completion_body(req, model="m", prompt=[1, 2, 3], max_tokens=5)
    assert body["prompt"] == [1, 2, 3] and body["add_special_tokens"] is False
    assert {
        k: body[k] for k in ("temperature", "top_p", "top_k", "seed", "repetition_penalty")
    } == {
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "repetition_penalty": 1.1,
    }
    # Stop sequences are matched by the engine, as for every runtime.
    assert "stop" not in body
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    plain = completion_body(GenerationRequest("hi"), model="m", prompt="hi", max_tokens=9)
    assert not {"temperature", "top_p", "top_k", "seed", "structured_outputs"} & set(plain)
    assert plain["add_special_tokens"] is True


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("json_schema", '{"type": "object"}', {"json": {"type": "object"}}),
        ("regex", "[0-9]+", {"regex": "[0-9]+"}),
        ("lark_grammar", 'start: "yes" | "no"', {"grammar": 'start: "yes" | "no"'}),
    ],
)
def test_constraints_become_structured_outputs(kind: Any, text: str, expected: Any) -> None:
    req = GenerationRequest("x", constraint=Constraint(kind, text))
    assert (
        completion_body(req, model="m", prompt="x", max_tokens=1)["structured_outputs"] == expected
    )


def test_a_broken_json_schema_is_a_bad_request() -> None:
    req = GenerationRequest("x", constraint=Constraint("json_schema", "{nope"))
    with pytest.raises(InvalidRequest):
        completion_body(req, model="m", prompt="x", max_tokens=1)


def test_metrics_are_folded_under_ingot_names() -> None:
    text = "\n".join(
        [
            "# HELP vllm:num_requests_running Number of requests running.",
            'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
            'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0',
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25',
            'vllm:generation_tokens_total{engine="0",model_name="m"} 40.0',
            'vllm:request_success_total{finished_reason="stop"} 2.0',
            'vllm:request_success_total{finished_reason="length"} 1.0',
            'vllm:generation_tokens_created{engine="0"} 1.7e9',
        ]
    )
    assert parse_metrics(text) == {
        "requests_running": 3.0,
        "requests_waiting": 1.0,
        "kv_cache_usage": 0.25,
        "generation_tokens_total": 40.0,
        "requests_finished_total": 3.0,
    }


# -- selection -------------------------------------------------------------------------------------
def runtime_with(build: Any, tmp_path: Path, **kw: Any) -> VllmRuntime:
    rt = VllmRuntime(str(tmp_path / "python"), home=tmp_path, hardware=lambda: HW, **kw)
    rt._install = VllmInstall(rt.python, "0.32.0" if build else None, build, None if build else "x")
    rt._probed_at = float("inf")  # no re-probe in tests
    return rt


def test_missing_vllm_says_how_to_install_it(tmp_path: Path) -> None:
    rt = VllmRuntime(str(tmp_path / "nope" / "python"), home=tmp_path, hardware=lambda: HW)
    why = rt.unavailable_reason(vllm_variant())
    assert why is not None and "scripts/setup_vllm.sh" in why and "INGOT_VLLM_PYTHON" in why


def test_build_and_device_must_match(tmp_path: Path) -> None:
    cpu = runtime_with("cpu", tmp_path)
    assert cpu.unavailable_reason(vllm_variant()) is None
    why = cpu.unavailable_reason(vllm_variant(device="cuda"))
    assert why is not None and "CUDA build" in why
    # A bring-your-own folder runs wherever the installed build runs.
    byo = vllm_variant(source=ModelSource(kind="local", path=str(tmp_path)))
    assert runtime_with("cuda", tmp_path).device_for(byo) == "cuda"
    assert cpu.device_for(byo) == "cpu"
    remote = vllm_variant(source=ModelSource(kind="remote", url="http://10.0.0.1:8000"))
    assert runtime_with(None, tmp_path).unavailable_reason(remote) is None


def test_the_plans_sequences_follow_the_preferences(tmp_path: Path) -> None:
    # A loaded vLLM instance admits plan.max_num_seqs requests at once (its `concurrency`).
    rt = runtime_with("cpu", tmp_path)
    assert rt.plan(vllm_variant()).max_num_seqs == 16
    (tmp_path / "vllm.json").write_text(json.dumps({"defaults": {"max_num_seqs": 4}}))
    assert rt.plan(vllm_variant()).max_num_seqs == 4


# -- streaming against a fake vLLM -------------------------------------------------------------------
class FakeVllm:
    """vLLM's /tokenize, /detokenize and streamed /v1/completions, one token every `delay`."""

    def __init__(
        self,
        words: list[str],
        delay: float = 0.0,
        fail_after: int | None = None,
        cached: int | None = None,
    ) -> None:
        self.words = words
        self.cached = cached
        self.delay = delay
        self.fail_after = fail_after
        self.bodies: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.sent = 0

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            for i, w in enumerate(self.words[: body["max_tokens"]], 1):
                if self.fail_after is not None and i > self.fail_after:
                    raise httpx.ReadError("connection reset")
                await asyncio.sleep(self.delay)
                self.sent = i
                last = i == min(len(self.words), body["max_tokens"])
                finish = ("length" if i == body["max_tokens"] else "stop") if last else None
                usage: dict[str, Any] = {"prompt_tokens": 3, "completion_tokens": i}
                if last and self.cached is not None:
                    # vLLM with --enable-prompt-tokens-details, in its final usage.
                    usage["prompt_tokens_details"] = {"cached_tokens": self.cached}
                chunk = {"choices": [{"text": w, "finish_reason": finish}], "usage": usage}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"
        finally:
            self.closed.set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if request.url.path == "/tokenize":
            n = 3 if "messages" in body else len(body["prompt"].split())
            return httpx.Response(200, json={"count": n, "tokens": list(range(1, n + 1))})
        if request.url.path == "/detokenize":
            return httpx.Response(200, json={"prompt": "<user>hi<assistant>"})
        if request.url.path == "/v1/completions":
            self.bodies.append(body)
            if body.get("temperature") == 99:
                return httpx.Response(400, json={"error": {"message": "temperature too high"}})
            return httpx.Response(200, content=self._stream(body))
        return httpx.Response(404)


def instance(fake: FakeVllm) -> VllmInstance:
    client = VllmClient(
        "http://127.0.0.1:1", "m", local=True, transport=httpx.MockTransport(fake.handler)
    )
    return VllmInstance(
        vllm_variant(),
        client,
        context_length=64,
        device="cpu",
        plan=None,
        server=None,
        concurrency=4,
    )


async def collect(inst: VllmInstance, req: GenerationRequest, halt: HaltFlag) -> list[Any]:
    return [ev async for ev in inst.generate(req, halt)]


async def test_a_rendered_chat_is_generated_from_exactly_the_counted_tokens() -> None:
    fake = FakeVllm(["Hel", "lo", "!"])
    inst = instance(fake)
    prompt = await inst.render_chat([{"role": "user", "content": "hi"}])
    assert prompt == "<user>hi<assistant>"
    assert await inst.count_tokens(prompt) == 3
    events = await collect(inst, GenerationRequest(prompt), HaltFlag())
    assert fake.bodies[0]["prompt"] == [1, 2, 3]
    # Without max_tokens: the output limit, within what the context leaves after the prompt.
    assert fake.bodies[0]["max_tokens"] == 64 - 3
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [(d.text, d.tokens) for d in deltas] == [("Hel", 1), ("lo", 2), ("!", 3)]
    stats = events[-1]
    assert isinstance(stats, RuntimeStats)
    assert (stats.prompt_tokens, stats.completion_tokens, stats.finish_reason) == (3, 3, "stop")
    assert stats.first_token is not None and stats.started <= stats.first_token <= stats.finished
    await inst.close()


async def test_the_prompt_tokens_vllm_served_from_its_cache_are_reported() -> None:
    for cached, expected in ((2, 2), (None, 0)):
        inst = instance(FakeVllm(["a", "b"], cached=cached))
        stats = (await collect(inst, GenerationRequest("x y z"), HaltFlag()))[-1]
        assert isinstance(stats, RuntimeStats) and stats.cached_tokens == expected
        await inst.close()


async def test_max_tokens_reports_length() -> None:
    inst = instance(FakeVllm(["a", "b", "c", "d"]))
    events = await collect(inst, GenerationRequest("x y", SamplingParams(max_tokens=2)), HaltFlag())
    assert events[-1].finish_reason == "length" and events[-1].completion_tokens == 2


async def test_a_halt_closes_the_stream_within_a_token() -> None:
    fake = FakeVllm([f"w{i} " for i in range(200)], delay=0.01)
    inst = instance(fake)
    halt = HaltFlag()
    seen: list[Any] = []
    async for ev in inst.generate(GenerationRequest("go"), halt):
        seen.append(ev)
        if len(seen) == 5:
            halt.halt("cancelled")
    await asyncio.wait_for(fake.closed.wait(), 1.0)
    stats = seen[-1]
    assert isinstance(stats, RuntimeStats) and stats.finish_reason == "cancelled"
    assert fake.sent <= 7 and stats.completion_tokens <= 6


async def test_a_stop_halt_finishes_as_stop_and_closing_the_generator_closes_the_stream() -> None:
    fake = FakeVllm([f"w{i} " for i in range(200)], delay=0.01)
    inst = instance(fake)
    halt = HaltFlag()
    gen = inst.generate(GenerationRequest("go"), halt)
    first = await gen.__anext__()
    assert isinstance(first, TextDelta)
    halt.halt("stop")
    rest = [ev async for ev in gen]
    assert rest[-1].finish_reason == "stop"
    fake2 = FakeVllm([f"w{i} " for i in range(200)], delay=0.01)
    gen2 = instance(fake2).generate(GenerationRequest("go"), HaltFlag())
    await gen2.__anext__()
    await gen2.aclose()  # the consumer went away (a client disconnect)
    await asyncio.wait_for(fake2.closed.wait(), 1.0)
    assert fake2.sent < 5


async def test_vllm_errors_become_engine_errors() -> None:
    inst = instance(FakeVllm(["a"]))
    with pytest.raises(InvalidRequest) as e:
        await collect(inst, GenerationRequest("x", SamplingParams(temperature=99)), HaltFlag())
    assert "temperature too high" in e.value.message
    broken = instance(FakeVllm(["a", "b", "c"], fail_after=1))
    with pytest.raises(GenerationFailed) as e2:
        await collect(broken, GenerationRequest("x"), HaltFlag())
    assert "broke" in e2.value.message


# -- the server process ------------------------------------------------------------------------------
async def test_a_server_that_dies_while_loading_fails_the_load_with_its_exit_code_and_log(
    tmp_path: Path,
) -> None:
    # The engine's own Python has no vLLM: the launcher starts, the server exits at once.
    server = VllmServer(
        sys.executable,
        ["--port", "1"],
        env=dict(os.environ),
        name="test server",
        log_file=tmp_path / "logs" / "vllm-test.log",
    )
    await server.start()
    with pytest.raises(LoadFailed) as e:
        await server.wait_ready(
            "http://127.0.0.1:1", timeout_s=30, progress=lambda p: None, what="m"
        )
    assert "exited with code 1" in e.value.message and "No module named" in e.value.message
    assert server.server_pid is not None and not psutil.pid_exists(server.server_pid)
    assert "No module named" in (tmp_path / "logs" / "vllm-test.log").read_text()
    await server.close()
