"""EngineService embedding the real all-MiniLM-L6-v2 (built from its PyPI package) in its worker
process: vector shape and norm, batch invariance, token arrays, limits, the task check both ways,
telemetry, and the fidelity check against the torch reference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.embeddings import EmbeddingRequest, EmbeddingResult
from engine.errors import ContextTooLong, InvalidRequest, WrongModelTask
from engine.requests import ChatRequest
from engine.service import EngineService
from tests.support.embedding_model import VARIANT_ID

MODEL = "all-minilm-l6-v2"
TEXTS = (
    "How do I read a file line by line in Python?",
    "Read each line of a text file in Python",
    "The lighthouse keeper polished the brass before the storm.",
    "x",
)


@pytest.fixture
async def service(embedding_home: Path) -> AsyncIterator[EngineService]:
    svc = build_engine(EngineConfig(home=embedding_home, threads=2))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


def matrix(result: EmbeddingResult) -> np.ndarray:
    return np.array([result.floats(i) for i in range(len(result.vectors))], dtype=np.float32)


async def test_vectors_are_normalised_batched_and_in_order(service: EngineService) -> None:
    both = await service.embed(EmbeddingRequest(MODEL, texts=TEXTS))
    assert both.model_id == VARIANT_ID and both.dimensions == 384
    vectors = matrix(both)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The two questions about reading files are closer to each other than to the lighthouse.
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.7 > sims[0, 2]
    # Each input alone gives the vector it got in the (length-sorted, padded) batch.
    for i, text in enumerate(TEXTS):
        alone = matrix(await service.embed(EmbeddingRequest(MODEL, texts=(text,))))[0]
        assert float(alone @ vectors[i]) > 0.99999
    assert both.tokens[3] == 3 and both.prompt_tokens == sum(both.tokens)
    record = service.telemetry.requests[-1]
    assert record.kind == "embed" and record.model_id == VARIANT_ID
    assert record.completion_tokens == 0 and record.prompt_tokens == 3


async def test_token_arrays_limits_and_truncation(service: EngineService) -> None:
    text = await service.embed(EmbeddingRequest(MODEL, texts=("hello world",)))
    ids = await service.embed(EmbeddingRequest(MODEL, tokens=((101, 7592, 2088, 102),)))
    assert text.vectors == ids.vectors
    long = "word " * 400
    with pytest.raises(ContextTooLong) as err:
        await service.embed(EmbeddingRequest(MODEL, texts=("short", long)))
    assert "Input 1 is 402 tokens" in err.value.message and "truncate" in (err.value.hint or "")
    cut = await service.embed(EmbeddingRequest(MODEL, texts=(long,), truncate=True))
    assert cut.tokens == (256,)
    with pytest.raises(InvalidRequest, match="not in"):
        await service.embed(EmbeddingRequest(MODEL, tokens=((101, 99_999_999, 102),)))
    with pytest.raises(InvalidRequest, match="empty"):
        await service.embed(EmbeddingRequest(MODEL, texts=("a", "")))


async def test_the_task_decides_which_requests_a_model_takes(service: EngineService) -> None:
    with pytest.raises(WrongModelTask, match="embedding model") as err:
        service.chat(ChatRequest(MODEL, [{"role": "user", "content": "hi"}]))
    assert "/v1/embeddings" in (err.value.hint or "")
    with pytest.raises(WrongModelTask, match="does not make embeddings"):
        await service.embed(EmbeddingRequest("smollm2-135m", texts=("hi",)))
    views = {v.variant.id: v for v in service.list_models(task="embeddings")}
    assert list(views) == [VARIANT_ID]
    view = views[VARIANT_ID]
    assert view.cached and view.fit.fits and view.runtime_unavailable is None
    assert view.variant.runtime == "onnxruntime"


async def test_fidelity_against_the_torch_reference(service: EngineService) -> None:
    report = await service.verify_fidelity(MODEL)
    assert report.meets_target
    assert getattr(report, "min_cosine", 0.0) >= 0.999
