"""GGUF blocks repacked for MatMulNBits: exact against gguf-py's own dequantization, on random
blocks; and the int8 lm_head rounding."""

from __future__ import annotations

import numpy as np
import pytest

from infer_opt.engines.onnx.gguf_blocks import (
    q4_0_blocks,
    q4_1_blocks,
    q8_0_blocks,
    rope_row_permutation,
)

gguf = pytest.importorskip("gguf")


def _random(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.05, (rows, cols)).astype(np.float32)
    w[0, :32] = 0.0  # a constant block: d = 0
    w[1, :32] = np.abs(w[1, :32])  # a block that does not straddle 0
    return w


@pytest.mark.parametrize("kind,parse", [("Q4_1", q4_1_blocks), ("Q4_0", q4_0_blocks)])
def test_4bit_blocks_dequantize_exactly(kind: str, parse: object) -> None:
    from gguf.quants import dequantize, quantize

    qtype = gguf.GGMLQuantizationType[kind]
    raw = quantize(_random(48, 96, 0), qtype)  # [N, K/32 * bytes per block] uint8
    blocks = parse(raw)
    assert blocks.packed.shape == (48, 3, 16) and blocks.scales.shape == (48, 3)
    want = dequantize(raw, qtype)
    assert np.array_equal(blocks.dequantize(), want)
    # MatMulNBits' view: (q - 8) * d from the nibbles in element order, plus the offsets.
    q = blocks.codes().astype(np.float32)
    assert q.max() <= 15 and blocks.codes()[..., ::2].ravel().tolist() == (
        (blocks.packed & 0x0F).ravel().tolist())
    nbits = blocks.scales[..., None] * (q - 8)
    offsets = blocks.offsets()
    if offsets is not None:
        nbits = nbits + offsets[..., None]
    assert np.allclose(nbits.reshape(48, 96), want, atol=1e-6, rtol=0)


def test_8bit_blocks_dequantize_exactly() -> None:
    from gguf.quants import dequantize, quantize

    raw = quantize(_random(16, 64, 1), gguf.GGMLQuantizationType.Q8_0)
    blocks = q8_0_blocks(raw)
    assert blocks.b.dtype == np.uint8 and blocks.b.shape == (16, 2, 32)
    assert np.array_equal(blocks.dequantize(), dequantize(raw, gguf.GGMLQuantizationType.Q8_0))


def test_row_permutation_is_transformers_reverse_permute() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(24 * 2, dtype=np.float32).reshape(24, 2)
    for heads in (2, 3, 6):
        want = LlamaTensorProcessor()._reverse_permute_weights(w, heads, heads)
        assert np.array_equal(w[rope_row_permutation(24, heads)], want)


def test_rtn_int8_is_q8_0() -> None:
    """The int8 lm_head's rounding is GGUF's Q8_0 (symmetric, blocks of 32, absmax / 127)."""
    from gguf.quants import dequantize, quantize

    from infer_opt.engines.onnx.nbits import rtn_int8

    w = _random(8, 64, 2)
    b, s = rtn_int8(w)
    ours = (s[..., None] * (b.astype(np.float32) - 128)).reshape(w.shape)
    theirs = dequantize(quantize(w, gguf.GGMLQuantizationType.Q8_0),
                        gguf.GGMLQuantizationType.Q8_0)
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(w).max()
