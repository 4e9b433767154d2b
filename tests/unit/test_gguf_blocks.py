"""GGUF block decoding and MatMulNBits packing on synthetic data, checked against gguf and onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

from engine.compile import gguf_import  # noqa: E402
from engine.compile.gguf_blocks import (  # noqa: E402
    BLOCK_BYTES,
    EXACT_TYPES,
    NBitsWeight,
    concat_rows,
    decode,
    dequantize,
)
from engine.compile.gguf_transcode import node_modules  # noqa: E402
from engine.compile.gguf_weights import row_orders  # noqa: E402

RNG = np.random.default_rng(1234)


def _qtype(name: str) -> Any:
    return gguf.GGMLQuantizationType[name]


def _quantized(qtype: str, rows: int = 24, cols: int = 96) -> np.ndarray:
    """Real ggml blocks of a random weight, as gguf's quantiser writes them: [rows, bytes]."""
    w = (RNG.standard_normal((rows, cols)) * 0.05 + RNG.standard_normal((rows, 1)) * 0.02).astype(
        np.float32
    )
    return np.asarray(gguf_quantize(w, _qtype(qtype)))


def _random_blocks(qtype: str, rows: int = 16, nblocks: int = 3) -> np.ndarray:
    """Arbitrary block bytes (every nibble pattern) with finite fp16 scales and minimums."""
    size = BLOCK_BYTES[qtype]
    raw = RNG.integers(0, 256, size=(rows, nblocks, size), dtype=np.uint8)
    heads = 4 if qtype == "Q4_1" else 2
    halves = RNG.uniform(-0.2, 0.2, size=(rows, nblocks, heads // 2)).astype(np.float16)
    raw[:, :, :heads] = halves.view(np.uint8).reshape(rows, nblocks, heads)
    return raw.reshape(rows, nblocks * size)


@pytest.mark.parametrize("qtype", EXACT_TYPES)
@pytest.mark.parametrize("make", [_quantized, _random_blocks])
def test_ggml_dequantisation_matches_gguf_bit_for_bit(qtype: str, make: Any) -> None:
    raw = make(qtype)
    expected = gguf_dequantize(raw, _qtype(qtype))
    assert np.array_equal(dequantize(raw, qtype), expected)


@pytest.mark.parametrize("qtype", EXACT_TYPES)
@pytest.mark.parametrize("make", [_quantized, _random_blocks])
def test_matmulnbits_form_holds_the_same_weights(qtype: str, make: Any) -> None:
    raw = make(qtype)
    expected = gguf_dequantize(raw, _qtype(qtype))
    weight = decode(raw, qtype)
    assert weight.bits == (8 if qtype == "Q8_0" else 4)
    assert weight.packed.shape == (raw.shape[0], expected.shape[1] // 32, 32 * weight.bits // 8)
    assert weight.scales.shape == weight.packed.shape[:2]
    assert (weight.offsets is not None) == (qtype == "Q4_1")
    got = weight.dequantize()
    if qtype == "Q4_1":
        # d*(q-8) + (8d+m) vs. d*q + m: equal up to float32 rounding of the regrouped sum.
        assert np.allclose(got, expected, rtol=0, atol=1e-6 * float(np.abs(expected).max()))
    else:
        assert np.array_equal(got, expected)


def test_q4_nibbles_move_from_ggml_order_to_matmulnbits_order() -> None:
    # One Q4_0 block: d = 1, byte j holds element j (low) and element j+16 (high).
    block = np.zeros(18, np.uint8)
    block[:2] = np.array([1.0], np.float16).view(np.uint8)
    values = np.arange(32) % 16
    block[2:] = (values[:16] | (values[16:] << 4)).astype(np.uint8)
    weight = decode(block.reshape(1, 18), "Q4_0")
    assert weight.quants().reshape(-1).tolist() == values.tolist()
    # MatMulNBits: element 2i in the low nibble of byte i, element 2i+1 in the high one.
    packed = weight.packed.reshape(-1)
    assert [(b & 15, b >> 4) for b in packed[:2]] == [(0, 1), (2, 3)]
    assert weight.dequantize().reshape(-1).tolist() == (values - 8).tolist()


def test_q8_0_quants_get_the_implicit_zero_point_128() -> None:
    block = np.zeros(34, np.uint8)
    block[:2] = np.array([0.5], np.float16).view(np.uint8)
    q = np.array([-128, -1, 0, 1, 127] + [0] * 27, np.int8)
    block[2:] = q.view(np.uint8)
    weight = decode(block.reshape(1, 34), "Q8_0")
    assert weight.packed.reshape(-1)[:5].tolist() == [0, 127, 128, 129, 255]
    assert weight.dequantize().reshape(-1)[:5].tolist() == [-64.0, -0.5, 0.0, 0.5, 63.5]


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_widening_to_8_bits_changes_no_value(qtype: str) -> None:
    weight = decode(_random_blocks(qtype), qtype)
    wide = weight.to_8bit()
    assert wide.bits == 8 and wide.packed.shape[-1] == 32
    assert np.array_equal(wide.dequantize(), weight.dequantize())


def test_concat_rows_mixes_widths_and_fills_missing_offsets() -> None:
    q4_1 = decode(_random_blocks("Q4_1", rows=4), "Q4_1")
    q8_0 = decode(_random_blocks("Q8_0", rows=2), "Q8_0")
    q4_0 = decode(_random_blocks("Q4_0", rows=3), "Q4_0")
    fused = concat_rows([q4_1, q8_0, q4_0])
    assert fused.bits == 8 and fused.rows == 9 and fused.offsets is not None
    assert np.all(fused.offsets[4:] == 0)
    expected = np.concatenate([q4_1.dequantize(), q8_0.dequantize(), q4_0.dequantize()])
    assert np.array_equal(fused.dequantize(), expected)
    same = concat_rows([q4_0, q4_0])
    assert same.bits == 4 and same.offsets is None
    with pytest.raises(ValueError, match="differ in K"):
        concat_rows([q4_0, decode(_random_blocks("Q4_0", nblocks=2), "Q4_0")])


def test_take_rows_moves_whole_rows() -> None:
    weight = decode(_random_blocks("Q4_1", rows=6), "Q4_1")
    order = np.array([5, 0, 3, 1, 4, 2])
    assert np.array_equal(weight.take_rows(order).dequantize(), weight.dequantize()[order])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="Q5_0"):
        decode(np.zeros((1, 22), np.uint8), "Q5_0")
    with pytest.raises(ValueError, match="whole 20-byte blocks"):
        decode(np.zeros((1, 30), np.uint8), "Q4_1")


def test_exact_types_are_spelled_the_same_where_numpy_is_not_imported() -> None:
    assert gguf_import.EXACT_TYPES == EXACT_TYPES


def test_llama_row_order_is_the_one_transformers_undoes() -> None:
    heads, kv_heads, head_dim, k = 4, 2, 8, 5
    config = {"num_attention_heads": heads, "num_key_value_heads": kv_heads}
    for n_head, rows in ((heads, heads * head_dim), (kv_heads, kv_heads * head_dim)):
        w = RNG.standard_normal((rows, k)).astype(np.float32)
        # transformers' LlamaTensorProcessor._reverse_permute_weights
        undone = w.reshape(n_head, rows // n_head // 2, 2, k).swapaxes(2, 1).reshape(w.shape)
        orders = row_orders(rows, config)
        assert orders[0] is None
        assert any(o is not None and np.array_equal(w[o], undone) for o in orders)


def test_builder_node_names_map_to_hf_modules() -> None:
    assert node_modules("/model/layers.3/attn/qkv_proj/MatMul_Q8") == [
        "model.layers.3.self_attn.q_proj",
        "model.layers.3.self_attn.k_proj",
        "model.layers.3.self_attn.v_proj",
    ]
    assert node_modules("/model/layers.0/mlp/down_proj/MatMul_Q8") == [
        "model.layers.0.mlp.down_proj"
    ]
    assert node_modules("/model/layers.1/attn/o_proj/MatMul") == ["model.layers.1.self_attn.o_proj"]
    assert node_modules("/lm_head/MatMul_Q8") == ["lm_head"]
    assert node_modules("/model/vision/patch/MatMul") is None


# -- the blocks through onnxruntime's own kernels -------------------------------------------------


def _run_graph(nodes: list[Any], inits: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> Any:
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    inputs = [
        helper.make_tensor_value_info(
            k, TensorProto.FLOAT if v.dtype == np.float32 else TensorProto.INT64, None
        )
        for k, v in feeds.items()
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(["y"], feeds)[0]


def _matmul_nbits_model(weight: NBitsWeight, x: np.ndarray) -> np.ndarray:
    """y = x @ W^T through MatMulNBits (accuracy_level 0: float math) plus the offset branch."""
    from onnx import helper

    from engine.compile.onnx_graph import Graph

    n, k = weight.rows, weight.cols
    node = helper.make_node(
        "MatMulNBits",
        ["x", "B", "scales"],
        ["y"],
        name="/model/layers.0/mlp/up_proj/MatMul_Q",
        domain="com.microsoft",
        K=k,
        N=n,
        bits=weight.bits,
        block_size=32,
        accuracy_level=0,
    )
    holder = helper.make_model(helper.make_graph([node], "g", [], []))
    graph = Graph(holder)
    if weight.offsets is not None:
        graph.add_offsets(0, holder.graph.node[0], weight.offsets)
    graph.finish()
    inits = {i.name: _array(i) for i in holder.graph.initializer}
    inits.update({"B": weight.packed, "scales": weight.scales})
    return np.asarray(_run_graph(list(holder.graph.node), inits, {"x": x}))


def _array(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    return np.asarray(numpy_helper.to_array(tensor))


@pytest.mark.parametrize("qtype", EXACT_TYPES)
def test_onnxruntime_matmulnbits_computes_with_the_gguf_weights(qtype: str) -> None:
    raw = _quantized(qtype, rows=40, cols=128)
    reference = gguf_dequantize(raw, _qtype(qtype)).astype(np.float64)
    x = RNG.standard_normal((2, 3, 128)).astype(np.float32)
    got = _matmul_nbits_model(decode(raw, qtype), x)
    expected = x.astype(np.float64) @ reference.T
    assert got.shape == (2, 3, 40)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_onnxruntime_gatherblockquantized_reads_the_gguf_rows(qtype: str) -> None:
    from onnx import helper

    raw = _quantized(qtype, rows=10, cols=64)
    weight = decode(raw, qtype)
    node = helper.make_node(
        "GatherBlockQuantized",
        ["data", "ids", "scales"],
        ["y"],
        domain="com.microsoft",
        bits=weight.bits,
        block_size=32,
        gather_axis=0,
        quantize_axis=1,
    )
    ids = np.array([[3, 0, 9]], np.int64)
    data = weight.packed.reshape(weight.rows, -1)
    got = _run_graph([node], {"data": data, "scales": weight.scales}, {"ids": ids})
    assert np.array_equal(got, gguf_dequantize(raw, _qtype(qtype))[ids])
