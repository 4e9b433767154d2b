"""GGUF Q4_0 / Q4_1 / Q8_0 blocks decoded and repacked for ONNX Runtime's MatMulNBits, bit-exact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Every legacy ggml quantisation type quantises runs of 32 weights along a row (the K axis).
BLOCK = 32
# Bytes per block: fp16 d, [fp16 m,] then the quants.
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
EXACT_TYPES = tuple(BLOCK_BYTES)
# MatMulNBits' implicit zero point without a zero_points input: 2^(bits-1).
ZERO_POINT = {4: 8, 8: 128}

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]


@dataclass(frozen=True)
class NBitsWeight:
    """A [N, K] weight in MatMulNBits form: w = scale * (q - 2^(bits-1)) + offset, per 32-block.

    `packed` is [N, K/32, 32*bits/8]: for 4 bits, element 2i of a block is the low nibble of byte
    i and element 2i+1 the high nibble. `offsets` (or None for all-zero) is the per-block constant
    that MatMulNBits cannot express; the importer adds it as (x summed per block) @ offsets^T.
    """

    bits: int
    packed: U8
    scales: F32
    offsets: F32 | None = None

    @property
    def rows(self) -> int:
        return int(self.packed.shape[0])

    @property
    def cols(self) -> int:
        return int(self.packed.shape[1]) * BLOCK

    def quants(self) -> U8:
        """The unpacked quants, [N, K/32, 32], each in 0 .. 2^bits - 1."""
        if self.bits == 8:
            return self.packed
        low = self.packed & np.uint8(0x0F)
        high = self.packed >> np.uint8(4)
        return np.stack([low, high], axis=-1).reshape(*self.packed.shape[:2], BLOCK)

    def dequantize(self) -> F32:
        """The [N, K] float32 weight exactly as MatMulNBits (plus the offset branch) computes it."""
        q = self.quants().astype(np.float32) - np.float32(ZERO_POINT[self.bits])
        w = q * self.scales[:, :, None]
        if self.offsets is not None:
            w = w + self.offsets[:, :, None]
        return w.reshape(self.rows, self.cols).astype(np.float32, copy=False)

    def to_8bit(self) -> NBitsWeight:
        """The same weight with 8-bit quants: q4 - 8 == q8 - 128, so nothing changes in value."""
        if self.bits == 8:
            return self
        q8 = (self.quants().astype(np.int16) + (ZERO_POINT[8] - ZERO_POINT[4])).astype(np.uint8)
        return NBitsWeight(8, q8, self.scales, self.offsets)

    def take_rows(self, index: NDArray[np.intp]) -> NBitsWeight:
        """Rows (output channels) reordered; blocks run along K, so they move whole."""
        offsets = None if self.offsets is None else self.offsets[index]
        return NBitsWeight(self.bits, self.packed[index], self.scales[index], offsets)


def concat_rows(parts: Sequence[NBitsWeight]) -> NBitsWeight:
    """Stack weights along N (a fused q/k/v projection); mixed widths all become 8-bit."""
    if not parts:
        raise ValueError("nothing to concatenate")
    if len({p.cols for p in parts}) != 1:
        raise ValueError(f"the weights differ in K: {sorted({p.cols for p in parts})}")
    if len({p.bits for p in parts}) > 1:
        parts = [p.to_8bit() for p in parts]
    offsets = None
    if any(p.offsets is not None for p in parts):
        offsets = np.concatenate(
            [p.offsets if p.offsets is not None else np.zeros_like(p.scales) for p in parts]
        )
    return NBitsWeight(
        parts[0].bits,
        np.concatenate([p.packed for p in parts]),
        np.concatenate([p.scales for p in parts]),
        offsets,
    )


def blocks(raw: NDArray[np.uint8], qtype: str) -> U8:
    """The raw bytes of an [N, K] GGUF tensor (as gguf's reader gives them) as [N, K/32, bytes]."""
    size = BLOCK_BYTES[qtype]
    data = np.ascontiguousarray(raw, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] % size:
        raise ValueError(
            f"a {qtype} tensor needs rows of whole {size}-byte blocks, got {data.shape}"
        )
    return data.reshape(data.shape[0], data.shape[1] // size, size)


def _fp16(b: U8, start: int) -> F32:
    return (
        np.ascontiguousarray(b[:, :, start : start + 2])
        .view(np.float16)[:, :, 0]
        .astype(np.float32)
    )


def _ggml_nibbles(qs: U8) -> U8:
    """ggml order: element j is the low nibble of byte j, element j+16 its high nibble."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)


def _pack_nibbles(q: U8) -> U8:
    """MatMulNBits order: element 2i in the low nibble of byte i, element 2i+1 in the high one."""
    return (q[..., 0::2] | (q[..., 1::2] << np.uint8(4))).astype(np.uint8)


def decode(raw: NDArray[np.uint8], qtype: str) -> NBitsWeight:
    """A GGUF Q4_0 / Q4_1 / Q8_0 tensor's blocks as MatMulNBits data, without re-quantising."""
    if qtype not in BLOCK_BYTES:
        raise ValueError(f"{qtype} blocks have no exact MatMulNBits form (only {EXACT_TYPES})")
    b = blocks(raw, qtype)
    d = _fp16(b, 0)
    if qtype == "Q8_0":
        # int8 q with zero point 128 as uint8: flipping the sign bit adds 128.
        return NBitsWeight(8, b[:, :, 2:] ^ np.uint8(0x80), d)
    if qtype == "Q4_0":
        return NBitsWeight(4, _pack_nibbles(_ggml_nibbles(b[:, :, 2:])), d)
    # Q4_1: w = d*q + m = d*(q - 8) + (8d + m), q in 0..15.
    m = _fp16(b, 2)
    offsets = (np.float32(ZERO_POINT[4]) * d + m).astype(np.float32)
    return NBitsWeight(4, _pack_nibbles(_ggml_nibbles(b[:, :, 4:])), d, offsets)


def dequantize(raw: NDArray[np.uint8], qtype: str) -> F32:
    """ggml's own dequantisation of the blocks (the formula gguf and llama.cpp use), [N, K]."""
    b = blocks(raw, qtype)
    d = _fp16(b, 0)[:, :, None]
    if qtype == "Q8_0":
        w = b[:, :, 2:].view(np.int8).astype(np.float32) * d
    elif qtype == "Q4_0":
        w = d * (_ggml_nibbles(b[:, :, 2:]).astype(np.int8) - np.int8(8)).astype(np.float32)
    else:
        w = d * _ggml_nibbles(b[:, :, 4:]).astype(np.float32) + _fp16(b, 2)[:, :, None]
    return w.reshape(b.shape[0], b.shape[1] * BLOCK).astype(np.float32, copy=False)
