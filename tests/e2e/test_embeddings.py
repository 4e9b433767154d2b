"""End-to-end embeddings with the real all-MiniLM-L6-v2: `POST /v1/embeddings` driven by the
official openai client (strict response validation), `ingot/embed` over stdio, and `ingot embed`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import openai
import pytest
from pygls.exceptions import JsonRpcException

from protocol.jsonrpc.embeddings import EmbedResult
from tests.e2e import cli_helpers
from tests.e2e.rest_server import RestServer, copy_home, running
from tests.e2e.rpc_client import engine
from tests.support.embedding_model import VARIANT_ID

MODEL = "all-minilm-l6-v2"
TEXTS = ["How do I read a file line by line in Python?", "Read a text file one line at a time"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, embedding_home_template: Path
) -> Iterator[RestServer]:
    home = copy_home(embedding_home_template, tmp_path_factory.mktemp("rest-embed") / "home")
    with running(home) as s:
        yield s


def test_the_openai_client_embeds_texts_and_token_arrays(server: RestServer) -> None:
    client = server.client()
    # The SDK asks for base64 unless told otherwise and decodes it itself, after validation:
    # its strict mode would check the base64 string against list[float] first, so that one call
    # goes through a client with the SDK's default (lenient) validation.
    lenient = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    packed = lenient.embeddings.create(model=MODEL, input=TEXTS)
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert packed.model == floats.model == VARIANT_ID and packed.object == "list"
    assert [d.index for d in floats.data] == [0, 1]
    a = np.array([d.embedding for d in floats.data], dtype=np.float32)
    b = np.array([d.embedding for d in packed.data], dtype=np.float32)
    assert a.shape == (2, 384) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(a[0] @ a[1]) > 0.6
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 10
    one = client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    ids = client.embeddings.create(
        model=MODEL, input=[101, 7592, 2088, 102], encoding_format="float"
    )
    assert one.data[0].embedding == ids.data[0].embedding and ids.usage.prompt_tokens == 4
    rows = client.embeddings.create(
        model=MODEL, input=[[101, 7592, 2088, 102], [101, 102]], encoding_format="float"
    )
    assert len(rows.data) == 2 and rows.usage.prompt_tokens == 6
    same = client.embeddings.create(
        model=MODEL, input=TEXTS, dimensions=384, encoding_format="float"
    )
    assert len(same.data[0].embedding) == 384


async def test_base64_is_float32_little_endian(server: RestServer) -> None:
    body = {"model": MODEL, "input": ["hello world"], "encoding_format": "base64"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url + "/v1/embeddings", json=body) as r,
    ):
        assert r.status == 200
        data = await r.json()
    raw = base64.b64decode(data["data"][0]["embedding"])
    vector = np.frombuffer(raw, dtype="<f4")
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    # Ingot's native route (what `ingot embed` uses against the service) answers EmbedResult.
    native = {"model": MODEL, "input": "hello world", "encodingFormat": "base64"}
    async with (
        aiohttp.ClientSession(headers=server.ingot_auth()) as http,
        http.post(server.url + "/ingot/v1/embed", json=native) as r,
    ):
        assert r.status == 200
        result = EmbedResult.model_validate(await r.json())
    assert result.embeddings == [data["data"][0]["embedding"]] and result.prompt_tokens == 4


@pytest.mark.parametrize(
    ("body", "param", "code", "words"),
    [
        ({"input": "x", "dimensions": 128}, "dimensions", "invalid_request", "384-dimensional"),
        ({"input": ["x"] * 2049}, "input", None, "2048"),
        ({"input": "word " * 300}, "input", "context_length_exceeded", "at most 256 tokens"),
        ({"input": ""}, "input", "invalid_request", "empty"),
        ({"input": [[101, 40_000, 102]]}, "input", "invalid_request", "vocabulary"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", None, "float"),
        ({"input": "x", "normalize": False}, "normalize", "invalid_request", "Unsupported"),
        ({"input": "x", "model": "smollm2-135m"}, "model", "wrong_model_task", "embeddings"),
    ],
)
def test_bad_requests_are_clear_400s(
    server: RestServer, body: dict[str, object], param: str, code: str | None, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().post(
            "/embeddings",
            body={"model": MODEL, **body},
            cast_to=openai.types.CreateEmbeddingResponse,
        )
    error = err.value.body
    assert isinstance(error, dict)
    assert error["param"] == param and words in error["message"]
    if code:
        assert error["code"] == code


def test_a_chat_request_to_the_embedding_model_is_a_400_with_a_hint(server: RestServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    error = err.value.body
    assert isinstance(error, dict) and error["code"] == "wrong_model_task"
    assert "/v1/embeddings" in error["message"] and error["param"] == "model"


async def test_jsonrpc_embed(embedding_home: Path) -> None:
    async with engine(embedding_home) as c:
        res = await c.request("ingot/embed", {"model": MODEL, "input": TEXTS})
        assert res["model"] == VARIANT_ID and res["dimensions"] == 384
        assert len(res["embeddings"]) == 2 and len(res["embeddings"][0]) == 384
        assert res["promptTokens"] == sum(res["tokens"])
        assert res["telemetry"]["kind"] == "embed"
        packed = await c.request(
            "ingot/embed", {"model": MODEL, "input": "hello", "encodingFormat": "base64"}
        )
        assert len(base64.b64decode(packed["embeddings"][0])) == 384 * 4
        with pytest.raises(JsonRpcException) as err:
            await c.request("ingot/embed", {"model": "smollm2-135m", "input": "hi"})
        assert err.value.code == -32030 and "embeddings" in err.value.message
        with pytest.raises(JsonRpcException) as err:
            await c.request(
                "ingot/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            )
        assert err.value.code == -32030 and "ingot/embed" in err.value.message
        with pytest.raises(JsonRpcException) as err:
            await c.request("ingot/embed", {"model": MODEL, "input": []})
        assert err.value.code == -32602
        # JSON can carry a lone surrogate; no tokenizer takes one: the request's fault.
        with pytest.raises(JsonRpcException) as err:
            await c.request("ingot/embed", {"model": MODEL, "input": ["ok", "\ud800"]})
        assert err.value.code == -32010 and "not valid Unicode" in err.value.message


def test_cli_embed(embedding_home: Path) -> None:
    done = cli_helpers.run(embedding_home, "embed", MODEL, *TEXTS)
    assert done.returncode == 0, done.stderr
    assert "[0] [" in done.stdout and "cosine similarity" in done.stdout
    assert "2 vectors of 384 dimensions" in done.stderr
    piped = cli_helpers.run(embedding_home, "embed", MODEL, "-o", "json", input="\n".join(TEXTS))
    assert piped.returncode == 0, piped.stderr
    res = json.loads(piped.stdout)
    assert res["dimensions"] == 384 and len(res["embeddings"]) == 2
    wrong = cli_helpers.run(embedding_home, "embed", "smollm2-135m", "hi")
    assert wrong.returncode == 1 and "does not make embeddings" in wrong.stderr
