"""Embeddings without a model: pooling and normalisation, batching, the model's config, request
validation on both wires, the task rule, and the base64 and float encodings of a vector."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import openai
import pytest
from pydantic import ValidationError

from engine.catalog.catalog import ModelCatalog
from engine.embeddings import (
    MAX_INPUTS,
    EmbeddingRequest,
    EmbeddingResult,
    check_inputs,
    vector_floats,
)
from engine.errors import InvalidRequest, WrongModelTask
from engine.runtimes.embedding_pooling import (
    EmbeddingConfig,
    l2_normalize,
    length_batches,
    pad_batch,
    pool,
)
from engine.selector import RuntimeSelector
from engine.telemetry import RequestRecord
from protocol.jsonrpc.embeddings import EmbedParams
from protocol.openai_embeddings import EmbeddingRequest as WireRequest
from server import embeddings as wire

HIDDEN = np.array(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # the last token is padding
        [[-1.0, 0.0], [1.0, 2.0], [3.0, -4.0]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 0], [1, 1, 1]], dtype=np.int64)


def test_mean_pooling_ignores_padding() -> None:
    out = pool(HIDDEN, MASK, "mean")
    assert np.allclose(out, [[2.0, 3.0], [1.0, -2 / 3]])
    assert np.allclose(pool(HIDDEN, MASK, "cls"), [[1.0, 2.0], [-1.0, 0.0]])
    assert np.allclose(pool(HIDDEN, MASK, "max"), [[3.0, 4.0], [3.0, 2.0]])
    assert np.allclose(pool(HIDDEN, MASK, "mean_sqrt_len")[0], [4 / np.sqrt(2), 6 / np.sqrt(2)])
    with pytest.raises(ValueError, match="pooling"):
        pool(HIDDEN, MASK, "median")


def test_l2_normalisation_gives_unit_rows_and_keeps_a_zero_row() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]]) and out.dtype == np.float32


def test_batches_group_similar_lengths_and_cover_every_input() -> None:
    rows = [[1] * n for n in (5, 1, 9, 3, 7)]
    batches = length_batches(rows, 2)
    assert batches == [[2, 4], [0, 3], [1]]
    # A token cap: no batch pads past 16 tokens, and a longer row goes alone.
    assert length_batches(rows, 32, max_tokens=16) == [[2], [4, 0], [3, 1]]
    assert length_batches([[1] * 40, [1]], 32, max_tokens=16) == [[0], [1]]
    ids, mask = pad_batch([rows[0], rows[1]], pad_id=0)
    assert ids.shape == mask.shape == (2, 5) and mask.sum() == 6 and ids.dtype == np.int64


def test_the_model_config_comes_from_the_sentence_transformers_folder(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = [
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    config = EmbeddingConfig.from_sentence_transformers(tmp_path)
    assert config == EmbeddingConfig(dimensions=384, pooling="mean", normalize=True, max_tokens=256)
    config.save(tmp_path)
    assert EmbeddingConfig.load(tmp_path) == config
    (tmp_path / "modules.json").write_text(json.dumps(modules[:2]))
    assert not EmbeddingConfig.from_sentence_transformers(tmp_path).normalize


def test_base64_is_the_float32_little_endian_bytes() -> None:
    values = [0.5, -0.25, 1.0e-3]
    raw = struct.pack("<3f", *values)
    result = EmbeddingResult("r", "m:1", 3, (raw,), (4,), _record())
    assert result.base64(0) == base64.b64encode(np.array(values, dtype="<f4").tobytes()).decode()
    assert vector_floats(raw) == pytest.approx(values)
    body = wire.openai_response(result, "float")
    parsed = openai.types.CreateEmbeddingResponse.model_validate(body)
    assert parsed.data[0].embedding == pytest.approx(values) and parsed.usage.total_tokens == 4
    assert wire.openai_response(result, "base64")["data"][0]["embedding"] == result.base64(0)


@pytest.mark.parametrize(
    ("value", "texts", "tokens"),
    [
        ("hi", ("hi",), None),
        (["a", "b"], ("a", "b"), None),
        ([101, 102], None, ((101, 102),)),
        ([[101], [5, 6]], None, ((101,), (5, 6))),
    ],
)
def test_every_openai_input_shape_becomes_one_engine_request(
    value: object, texts: object, tokens: object
) -> None:
    req = wire.from_openai(WireRequest.model_validate({"model": "m", "input": value}))
    assert req.texts == texts and req.tokens == tokens


@pytest.mark.parametrize(
    "body",
    [
        {"input": []},
        {"input": ["a", 1]},
        {"input": [-1, 5]},
        {"input": [[]]},
        {"input": ["x"] * (MAX_INPUTS + 1)},
        {"input": "x", "encoding_format": "int8"},
        {"input": "x", "dimensions": 0},
        {"input": 5},
    ],
)
def test_malformed_inputs_are_refused_by_the_wire_types(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WireRequest.model_validate({"model": "m", **body})


def test_unknown_parameters_and_dimensions_are_refused_clearly() -> None:
    with pytest.raises(InvalidRequest, match="normalize"):
        wire.from_openai(WireRequest.model_validate({"model": "m", "input": "x", "normalize": 1}))
    v = _catalog().get("all-minilm-l6-v2-cpu-fp32:1")
    assert v is not None
    wire.check_dimensions(v, None)
    wire.check_dimensions(v, 384)
    with pytest.raises(InvalidRequest, match="384-dimensional") as err:
        wire.check_dimensions(v, 256)
    assert err.value.data["param"] == "dimensions"
    params = EmbedParams.model_validate({"model": "m", "input": "x", "encodingFormat": "base64"})
    assert wire.from_rpc(params).texts == ("x",)


def test_the_engine_refuses_empty_and_too_many_inputs() -> None:
    check_inputs(EmbeddingRequest("m", texts=("a",)))
    for bad in (
        EmbeddingRequest("m"),
        EmbeddingRequest("m", texts=()),
        EmbeddingRequest("m", texts=("a", "")),
        EmbeddingRequest("m", texts=("a",) * (MAX_INPUTS + 1)),
        EmbeddingRequest("m", tokens=((),)),
        EmbeddingRequest("m", texts=("a", "b\ud800c")),
    ):
        with pytest.raises(InvalidRequest) as e:
            check_inputs(bad)
        assert e.value.data["param"] == "input"


@pytest.mark.parametrize("ttl", [float("inf"), float("-inf"), float("nan"), 1e10, -1e10])
def test_the_rpc_ttl_is_a_finite_number_of_seconds(ttl: float) -> None:
    EmbedParams.model_validate({"model": "m", "input": "x", "ttl": 600})
    with pytest.raises(ValidationError):
        EmbedParams.model_validate({"model": "m", "input": "x", "ttl": ttl})


def test_the_task_decides_the_runtime_and_which_requests_a_model_takes() -> None:
    catalog = _catalog()
    embed = catalog.get("all-minilm-l6-v2-cpu-fp32:1")
    chat = catalog.get("smollm2-135m-instruct-cpu-gguf:1")
    assert embed is not None and chat is not None
    assert embed.is_embedding and embed.runtime == "onnxruntime"
    assert not chat.is_embedding and chat.runtime == "onnx-genai"
    RuntimeSelector.require_task(embed, "embeddings")
    RuntimeSelector.require_task(chat, "chat-completion")
    with pytest.raises(WrongModelTask, match="cannot chat"):
        RuntimeSelector.require_task(embed, "chat-completion")
    with pytest.raises(WrongModelTask, match="does not make embeddings"):
        RuntimeSelector.require_task(chat, "embeddings")


def _catalog() -> ModelCatalog:
    return ModelCatalog.default()


def _record() -> RequestRecord:
    return RequestRecord(
        request_id="r",
        model_id="m:1",
        runtime="onnxruntime",
        device="cpu",
        kind="embed",
        started_at=0.0,
        queue_ms=0.0,
        load_ms=0.0,
        ttft_ms=None,
        total_ms=1.0,
        prompt_tokens=4,
        completion_tokens=0,
        prefill_tps=None,
        decode_tps=None,
        finish_reason="stop",
    )
