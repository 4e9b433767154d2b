"""KvShape from the two config files a model folder may carry: known, unknown and broken."""

from __future__ import annotations

import pytest

from engine.catalog.variant import KvShape

GENAI = {"model": {"decoder": {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_size": 64}}}


def test_genai_config_cpu_is_float32_and_cuda_float16() -> None:
    assert KvShape.from_genai_config(GENAI, "cpu") == KvShape(30, 3, 64, 4)
    assert KvShape.from_genai_config(GENAI, "cuda") == KvShape(30, 3, 64, 2)
    assert KvShape(30, 3, 64, 4).bytes_per_token() == 46080


@pytest.mark.parametrize(
    "cfg",
    [{}, [], "x", {"model": {}}, {"model": "x"}, {"model": {"decoder": {"num_hidden_layers": 2}}}],
)
def test_genai_config_that_does_not_say_is_unknown(cfg: object) -> None:
    assert KvShape.from_genai_config(cfg, "cpu") is None  # type: ignore[arg-type]


def test_genai_config_with_bad_values_raises() -> None:
    bad = {"model": {"decoder": {**GENAI["model"]["decoder"], "head_size": "wide"}}}
    with pytest.raises(ValueError, match="wide"):
        KvShape.from_genai_config(bad, "cpu")


def test_hf_config_head_dim_and_gqa() -> None:
    smol = {
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "hidden_size": 576,
    }
    assert KvShape.from_hf_config(smol) == KvShape(30, 3, 64, 2)
    # An explicit head_dim wins; no num_key_value_heads means multi-head attention.
    assert KvShape.from_hf_config(
        {"num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 80}, dtype_bytes=4
    ) == KvShape(2, 4, 80, 4)


def test_hf_config_unknown_or_broken() -> None:
    assert KvShape.from_hf_config({"hidden_size": 8}) is None
    for broken, says in (
        ({"num_hidden_layers": 2, "num_attention_heads": 0, "hidden_size": 8}, "is 0"),
        ({"num_hidden_layers": 2, "num_attention_heads": 4}, "neither head_dim"),
        ({"num_hidden_layers": "x", "num_attention_heads": 4, "hidden_size": 8}, "'x'"),
        # Shapes that would size a KV cache at zero or below, or overflow.
        ({"num_hidden_layers": -2, "num_attention_heads": 4, "hidden_size": 8}, "-2"),
        ({"num_hidden_layers": 2, "num_attention_heads": 16, "hidden_size": 8}, "head size"),
        ({"num_hidden_layers": float("inf"), "num_attention_heads": 4, "hidden_size": 8}, "inf"),
        ({"num_hidden_layers": True, "num_attention_heads": 4, "hidden_size": 8}, "True"),
    ):
        with pytest.raises(ValueError, match=says):
            KvShape.from_hf_config(broken)
