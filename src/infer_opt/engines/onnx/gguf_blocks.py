"""A GGUF's own quantized blocks, re-expressed exactly as ONNX Runtime MatMulNBits initializers.

GGUF stores each weight row in blocks of 32 values along K (llama.cpp, ggml-common.h):

    Q4_0  18 bytes:       fp16 d, 16 bytes qs            w = d * (q - 8)
    Q4_1  20 bytes:       fp16 d, fp16 m, 16 bytes qs    w = d * q + m
    Q8_0  34 bytes:       fp16 d, 32 x int8 q            w = d * q
    (4-bit qs: byte j holds q[j] in its low nibble and q[j + 16] in its high one, j = 0..15)

MatMulNBits (com.microsoft) dequantizes w = (q - zero_point) * scale per block of K, with two
4-bit values per byte in element order (byte j: q[2j] low nibble, q[2j + 1] high) and, when the
`zero_points` input is absent, zero_point = 2^(bits - 1). So, bit for bit:

    Q4_0 -> B = q (nibbles repacked), scale = d, no zero points          (exact)
    Q8_0 -> bits 8, B = q + 128, scale = d, no zero points               (exact)
    Q4_1 -> B = q, scale = d, no zero points: d * (q - 8); the rest, (m + 8d) per block, is
            added in fp32 as (sum of x over each block) @ (m + 8d)^T     ("min term", exact)

Omitting the zero points (rather than an explicit zero point 0 with min term m) keeps ORT on its
prepacked fast path at every accuracy level; with accuracy_level 4 the explicit zero point also
cost fidelity (research: KL 0.011 vs 0.0022 on SmolLM2).

transformers un-permutes the rows of attn_q / attn_k when it loads a llama GGUF (llama.cpp
permutes them for its RoPE layout); `GGUFWeights` applies the same row permutation to whole
blocks, so its weights line up with the safetensors the rest of infer-opt runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # values per block, every format here
# transformers name of a llama decoder layer's projection -> its GGUF tensor name.
GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@dataclass
class Q4Blocks:
    """One weight [N, K] as MatMulNBits 4-bit blocks.

    packed  uint8 [N, K/32, 16]  MatMulNBits nibble order
    scales  float32 [N, K/32]    d
    mins    float32 [N, K/32]    m (Q4_1), or None (Q4_0: no additive part)
    """

    packed: np.ndarray
    scales: np.ndarray
    mins: np.ndarray | None

    def codes(self) -> np.ndarray:
        """q, uint8 [N, K/32, 32] in element order."""
        lo, hi = self.packed & 0x0F, self.packed >> 4
        return np.stack([lo, hi], axis=-1).reshape(*self.packed.shape[:2], QK)

    def dequantize(self) -> np.ndarray:
        """[N, K] float32 with GGUF's own formula and fp32 operations (what transformers and
        gguf-py compute when they dequantize the file)."""
        q = self.codes().astype(np.float32)
        if self.mins is None:
            w = self.scales[..., None] * (q - np.float32(8.0))
        else:
            w = self.scales[..., None] * q + self.mins[..., None]
        return w.reshape(self.packed.shape[0], -1)

    def offsets(self) -> np.ndarray | None:
        """What MatMulNBits without zero points leaves out, per block: m + 8d (Q4_1), float32
        [N, K/32]; None for Q4_0, which it computes completely."""
        if self.mins is None:
            return None
        return (self.mins + np.float32(8.0) * self.scales).astype(np.float32)

    def take_rows(self, rows: np.ndarray) -> Q4Blocks:
        return Q4Blocks(self.packed[rows], self.scales[rows],
                        None if self.mins is None else self.mins[rows])


@dataclass
class Q8Blocks:
    """One weight [N, K] as MatMulNBits 8-bit blocks: B uint8 [N, K/32, 32] = q + 128, scales
    float32 [N, K/32] = d (zero point 128, the default)."""

    b: np.ndarray
    scales: np.ndarray

    def dequantize(self) -> np.ndarray:
        w = self.scales[..., None] * (self.b.astype(np.float32) - np.float32(128.0))
        return w.reshape(self.b.shape[0], -1)


def _fp16(raw: np.ndarray) -> np.ndarray:
    """[..., 2] uint8 little-endian halves -> float32 [...]."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _repack(qs: np.ndarray) -> np.ndarray:
    """GGUF 4-bit qs [..., 16] (q[j] low, q[j + 16] high) -> MatMulNBits [..., 16]
    (q[2j] low, q[2j + 1] high)."""
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [..., 32] element order
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def q4_1_blocks(raw: np.ndarray) -> Q4Blocks:
    """Q4_1 rows, uint8 [N, K/32 * 20] as a GGUF stores them -> Q4Blocks."""
    blocks = raw.reshape(raw.shape[0], -1, 20)
    return Q4Blocks(_repack(blocks[..., 4:20]), _fp16(blocks[..., 0:2]),
                    _fp16(blocks[..., 2:4]))


def q4_0_blocks(raw: np.ndarray) -> Q4Blocks:
    blocks = raw.reshape(raw.shape[0], -1, 18)
    return Q4Blocks(_repack(blocks[..., 2:18]), _fp16(blocks[..., 0:2]), None)


def q8_0_blocks(raw: np.ndarray) -> Q8Blocks:
    blocks = raw.reshape(raw.shape[0], -1, 34)
    q = np.ascontiguousarray(blocks[..., 2:34]).view(np.int8).astype(np.int16) + 128
    return Q8Blocks(q.astype(np.uint8), _fp16(blocks[..., 0:2]))


def rope_row_permutation(n_rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation (transformers' reverse_permute)."""
    half = n_rows // n_head // 2
    return np.arange(n_rows).reshape(n_head, half, 2).swapaxes(2, 1).reshape(-1)


class GGUFWeights:
    """The quantized tensors of a llama-architecture GGUF, looked up by transformers name."""

    def __init__(self, path: str | Path) -> None:
        from gguf import GGUFReader

        self.path = Path(path)
        self.reader = GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        arch = self._field("general.architecture")
        if arch != "llama":
            raise ValueError(f"{self.path.name}: architecture {arch!r}; GGUF blocks are read for "
                             "llama-architecture files only")
        self.n_head = int(self._field("llama.attention.head_count"))
        self.n_kv_head = int(self._field("llama.attention.head_count_kv") or self.n_head)

    def _field(self, key: str) -> object:
        field = self.reader.get_field(key)
        return None if field is None else field.contents()

    def kind(self, name: str) -> str:
        return self.tensors[name].tensor_type.name

    def projection(self, layer: int, hf_name: str) -> Q4Blocks:
        """The 4-bit blocks of `model.layers.{layer}.{hf_name}.weight`, rows as transformers
        has them. ValueError for a tensor that is not Q4_0 or Q4_1."""
        short = GGUF_NAMES[hf_name]
        name = f"blk.{layer}.{short}.weight"
        t = self.tensors[name]
        kind = t.tensor_type.name
        raw = np.asarray(t.data)
        if kind == "Q4_1":
            blocks = q4_1_blocks(raw)
        elif kind == "Q4_0":
            blocks = q4_0_blocks(raw)
        else:
            raise ValueError(f"{name} is {kind}; gguf-q4 carries Q4_0 and Q4_1 blocks over")
        if short == "attn_q":
            blocks = blocks.take_rows(rope_row_permutation(raw.shape[0], self.n_head))
        elif short == "attn_k":
            blocks = blocks.take_rows(rope_row_permutation(raw.shape[0], self.n_kv_head))
        return blocks

    def lm_head(self) -> Q8Blocks:
        """The output projection's Q8_0 blocks: `output.weight`, or the token embedding a tied
        lm_head reads. ValueError when that tensor is not Q8_0."""
        name = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        t = self.tensors[name]
        if t.tensor_type.name != "Q8_0":
            raise ValueError(f"{name} is {t.tensor_type.name}; an 8-bit lm_head is taken from "
                             "Q8_0 blocks only")
        return q8_0_blocks(np.asarray(t.data))
