"""Predicted Outputs without a model: the drafter that proposes tokens from a prediction, and the
wire (OpenAI `prediction`, JSON-RPC `prediction`, usage details)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from engine.generation import SamplingParams
from engine.requests import Usage
from engine.runtimes.onnx_speculative import Drafter
from protocol import openai as oa
from protocol.jsonrpc import generation as g
from server import translate


def drive(drafter: Drafter, output: list[int], width: int) -> tuple[int, int]:
    """Decode `output` as the worker would with verifying passes: (passes, plain steps)."""
    drafter.update([], output[:1])  # the first token comes from the prefill
    i, passes, steps = 1, 0, 0
    while i < len(output):
        drafts = drafter.propose(min(width - 1, len(output) - i - 1))
        produced: list[int] = []
        if drafts:
            passes += 1
            for j in range(len(drafts) + 1):
                produced.append(output[i + j])
                if j == len(drafts) or output[i + j] != drafts[j]:
                    break
        else:
            steps += 1
            produced = [output[i]]
        drafter.update(drafts, produced)
        i += len(produced)
    return passes, steps


def test_an_exact_prediction_is_drafted_whole() -> None:
    out = list(range(100, 180))
    d = Drafter(out, 7)
    passes, steps = drive(d, out, 8)
    assert steps == 0 and passes == -(-79 // 8)
    assert d.rejected == 0 and d.accepted == 79 - passes  # each pass ends with the model's token


def test_after_a_change_midway_it_finds_its_place_again() -> None:
    source = list(range(100, 200))
    # The answer rewrites source tokens 38-42 (inside a pass) and then goes on with the rest of the source.
    out = [*source[:38], 1, 2, 3, 4, 5, *source[43:]]
    d = Drafter(source, 7)
    passes, steps = drive(d, out, 8)
    assert d.rejected > 0
    # Lost for the changed tokens and the n-gram it needs to find its place again, no longer.
    assert steps <= 5 + Drafter.NGRAM + 1
    assert d.accepted >= len(out) - passes - steps - 10


def test_an_answer_that_starts_differently_is_found_by_its_ngram() -> None:
    source = list(range(100, 150))
    out = [7, 8, 9, *source]  # "```python" before the code
    d = Drafter(source, 7)
    drive(d, out, 8)
    assert d.accepted >= 40


def test_a_useless_prediction_proposes_almost_nothing() -> None:
    d = Drafter(list(range(1000, 1100)), 7)
    passes, _ = drive(d, list(range(1, 300)), 8)
    assert passes <= 1 and d.accepted == 0  # one pass at the start, then lost for good


def test_repeated_misses_back_off() -> None:
    # A source whose n-grams keep matching the answer, whose next token never does.
    source = [1, 2, 3, 9] * 50
    out = [1, 2, 3, 4] * 50
    d = Drafter(source, 7)
    passes, steps = drive(d, out, 8)
    assert d.accepted < 10
    assert passes < 20 and steps > 150  # backing off 4, 8, ... 64 tokens between tries


def test_no_drafts_past_the_limit_or_without_a_source() -> None:
    assert Drafter([], 7).propose(5) == []
    assert Drafter([1, 2, 3], 0).propose(5) == []
    d = Drafter(list(range(10)), 7)
    assert d.propose(0) == [] and d.propose(2) == [0, 1]


def test_openai_prediction_is_accepted_as_text_or_text_parts() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    req = oa.ChatCompletionRequest.model_validate(
        {**base, "prediction": {"type": "content", "content": "x = 1"}}
    )
    assert req.prediction is not None and req.prediction.text() == "x = 1"
    assert oa.unsupported_params(req) == []
    parts = {
        "type": "content",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    req = oa.ChatCompletionRequest.model_validate({**base, "prediction": parts})
    assert req.prediction is not None and req.prediction.text() == "ab"
    image = {"type": "content", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    req = oa.ChatCompletionRequest.model_validate({**base, "prediction": image})
    with pytest.raises(ValueError, match="must be text"):
        assert req.prediction is not None and req.prediction.text()
    for bad in ({"type": "other", "content": "x"}, {"type": "content"}, "x = 1"):
        with pytest.raises(ValidationError):
            oa.ChatCompletionRequest.model_validate({**base, "prediction": bad})


def test_usage_reports_prediction_tokens_on_both_wires() -> None:
    usage = oa.Usage(
        prompt_tokens=3,
        completion_tokens=9,
        total_tokens=12,
        completion_tokens_details=oa.CompletionTokensDetails(
            accepted_prediction_tokens=6, rejected_prediction_tokens=2
        ),
    )
    details = usage.model_dump()["completion_tokens_details"]
    assert details == {
        "accepted_prediction_tokens": 6,
        "rejected_prediction_tokens": 2,
        "reasoning_tokens": 0,
    }
    wire = g.Usage(
        prompt_tokens=3,
        completion_tokens=9,
        total_tokens=12,
        accepted_prediction_tokens=6,
        rejected_prediction_tokens=2,
    ).model_dump(by_alias=True)
    assert wire["acceptedPredictionTokens"] == 6 and wire["rejectedPredictionTokens"] == 2
    assert Usage(3, 9, 0, 6, 2).accepted_prediction_tokens == 6


def test_jsonrpc_chat_prediction_reaches_the_engine_request() -> None:
    p = g.ChatParams.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "prediction": "x = 1"}
    )
    assert translate.chat_request(p).params.prediction == "x = 1"
    p = g.ChatParams.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert translate.chat_request(p).params.prediction is None
    assert replace(SamplingParams(), prediction="y").prediction == "y"
    edit = g.EditParams.model_validate(
        {
            "uri": "file:///a.py",
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
            "instruction": "x",
            "prediction": "z",
        }
    )
    assert edit.prediction == "z"
