"""End-to-end Predicted Outputs: the REST service driven by the official `openai` client (strict
response validation), and Edit Selection over JSON-RPC, on the real default model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lsprotocol import types
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.rest_server import RestServer, copy_home, running
from tests.e2e.rpc_client import engine

MODEL = "smollm2-135m"
CODE = """def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
"""
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Reply with only the code."},
    {"role": "user", "content": f"Add type hints to this code.\n\n{CODE}"},
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(seeded_home_template, tmp_path_factory.mktemp("rest-predicted") / "home")
    with running(home) as s:
        yield s


def test_openai_client_prediction_gives_the_same_answer_and_reports_usage(
    server: RestServer,
) -> None:
    client = server.client()
    # The first request with a prediction has the model's worker build its verifying session
    # (in the background, ~1 s, longer on a busy machine, while it decodes as usual): later ones
    # draft from the start. Wait until a prediction is used.
    deadline = time.monotonic() + 120
    while True:
        warm = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            temperature=0,
            max_tokens=16,
            prediction={"type": "content", "content": CODE},
        )
        details = warm.usage.completion_tokens_details if warm.usage else None
        if details is not None and details.accepted_prediction_tokens:
            break
        assert time.monotonic() < deadline, "the verifier never became ready"
        time.sleep(0.5)
    plain = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=80,
    )
    text = plain.choices[0].message.content
    assert text
    details = plain.usage.completion_tokens_details if plain.usage else None
    assert details is not None and details.accepted_prediction_tokens == 0
    predicted = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=80,
        prediction={"type": "content", "content": text},
    )
    assert predicted.choices[0].message.content == text
    assert predicted.usage is not None and plain.usage is not None
    assert predicted.usage.completion_tokens == plain.usage.completion_tokens
    got = predicted.usage.completion_tokens_details
    assert got is not None and got.accepted_prediction_tokens
    assert got.accepted_prediction_tokens >= predicted.usage.completion_tokens // 2
    assert got.rejected_prediction_tokens is not None

    # Streamed, with the prediction as text parts: the same text, usage in the last chunk.
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=80,
        prediction={"type": "content", "content": [{"type": "text", "text": text}]},
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == text
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.accepted_prediction_tokens


def test_a_prediction_that_is_not_text_is_a_400(server: RestServer) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            extra_body={"prediction": {"type": "content", "content": [{"type": "image_url"}]}},
        )
    assert e.value.status_code == 400 and "prediction" in str(e.value)


async def test_edit_selection_sends_the_selection_as_the_prediction(
    seeded_home: Path,
) -> None:
    async with engine(seeded_home) as c:
        uri = "file:///tmp/specE_arith.py"
        c.lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=CODE
                )
            )
        )
        params = {
            "uri": uri,
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 10, "character": 0}},
            "instruction": "Add type hints.",
            "model": MODEL,
            "maxTokens": 60,
            "temperature": 0,
        }
        # The first edit has the worker build its verifier (in the background): wait until a
        # prediction is used.
        deadline = time.monotonic() + 120
        while True:
            warm = await c.request("ingot/edit", {**params, "maxTokens": 16})
            if warm["generation"]["usage"].get("acceptedPredictionTokens"):
                break
            assert time.monotonic() < deadline, "the verifier never became ready"
            await asyncio.sleep(0.5)
        edit = await c.request("ingot/edit", params)
        unpredicted = await c.request("ingot/edit", {**params, "prediction": ""})
        assert edit["text"] == unpredicted["text"]
        usage = edit["generation"]["usage"]
        assert usage["completionTokens"] == unpredicted["generation"]["usage"]["completionTokens"]
        assert "acceptedPredictionTokens" in usage and "rejectedPredictionTokens" in usage
        assert unpredicted["generation"]["usage"]["acceptedPredictionTokens"] == 0
        # The model copies most of the selection: its tokens are drafted and kept.
        assert "def add(a" in edit["text"], edit["text"]
        assert usage["acceptedPredictionTokens"] > 0
