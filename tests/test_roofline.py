"""Bytes and FLOPs of one decode step, hand-computed for the tiny random model's config:
hidden 64, intermediate 128, 2 layers, 4 heads (head_dim 16), 2 KV heads, vocab 512, tied."""

from __future__ import annotations

import pytest

from infer_opt.core.roofline import (
    DecodeStep,
    Weight,
    WeightBytes,
    arithmetic_intensity,
    decode_step_bytes,
    decode_step_flops,
    mean_cached_len,
    roofline_pct,
)

HIDDEN, INTER, LAYERS, VOCAB, KV_DIM = 64, 128, 2, 512, 2 * 16  # KV_DIM: 2 kv heads x 16
# (name, rows, cols) of every matmul weight of one layer.
LINEARS = [("q", HIDDEN, HIDDEN), ("k", KV_DIM, HIDDEN), ("v", KV_DIM, HIDDEN),
           ("o", HIDDEN, HIDDEN), ("gate", INTER, HIDDEN), ("up", INTER, HIDDEN),
           ("down", HIDDEN, INTER)]
KV_BYTES_PER_TOKEN = 2 * LAYERS * KV_DIM * 4  # K and V, fp32: 512


def tiny_weights(tied: bool = True, int8: bool = False) -> WeightBytes:
    """int8: weight-only int8 linears with one fp32 scale per output row."""
    ws = [Weight("embed", VOCAB * HIDDEN, VOCAB * HIDDEN * 4, lookup_rows=VOCAB)]
    for layer in range(LAYERS):
        for name, rows, cols in LINEARS:
            n = rows * cols
            ws.append(Weight(f"{layer}.{name}", n, n if int8 else 4 * n, 4 * rows if int8 else 0))
        ws += [Weight(f"{layer}.norm{i}", HIDDEN, 4 * HIDDEN) for i in (1, 2)]
    ws.append(Weight("norm", HIDDEN, 4 * HIDDEN))
    if not tied:
        ws.append(Weight("lm_head", VOCAB * HIDDEN, VOCAB * HIDDEN * 4))
    return WeightBytes(tuple(ws), tied_lm_head="embed" if tied else None)


def step(weights: WeightBytes, cache: str = "dynamic", batch: int = 1, **kw: float) -> DecodeStep:
    defaults = dict(kv_bytes_per_token=KV_BYTES_PER_TOKEN, kv_element_bytes=4, query_groups=2,
                    allocated_len=24, mean_context_len=mean_cached_len(8, 16))
    return DecodeStep(weights, batch, cache, **{**defaults, **kw})  # type: ignore[arg-type]


def test_hand_counted_parameters() -> None:
    # 32768 embedding + 2 x (4096 + 2048 + 2048 + 4096 + 3 x 8192 + 128 norms) + 64 = 106816
    assert sum(w.elements for w in tiny_weights().weights) == 106816
    assert mean_cached_len(8, 16) == 16.0  # decode steps attend over 9..23 positions


def test_tied_fp32_dynamic_cache() -> None:
    # Tied: the lm_head matmul reads the whole table, counted once: 106816 x 4 = 427264 bytes;
    # cache 512 bytes/token x mean length 16 = 8192.
    assert decode_step_bytes(step(tiny_weights())) == 427264 + 8192


def test_untied_lm_head_and_lookup_rows() -> None:
    # Embedding by lookup: one 256-byte row per sequence; lm_head 131072; the rest 296192.
    assert decode_step_bytes(step(tiny_weights(tied=False))) == 256 + 131072 + 296192 + 8192
    # Batch 4: four rows looked up, four caches.
    assert decode_step_bytes(step(tiny_weights(tied=False), batch=4)) == (
        4 * 256 + 131072 + 296192 + 4 * 8192)


def test_static_cache_counts_its_allocated_length() -> None:
    assert decode_step_bytes(step(tiny_weights(), cache="static")) == 427264 + 512 * 24
    assert decode_step_bytes(step(tiny_weights(), cache="none")) == 427264


def test_int8_weights_count_data_plus_scales() -> None:
    # Per layer: 36864 int8 bytes + 512 fp32 scales (2048 bytes) + norms 512 = 39424; x 2 =
    # 78848; embedding (tied, fp32) 131072; final norm 256.
    assert decode_step_bytes(step(tiny_weights(int8=True))) == 78848 + 131072 + 256 + 8192


def test_flops_and_intensity() -> None:
    s = step(tiny_weights())
    # 2 per weight per token (106816) + attention: 2048 cached values x 2 x 2 query groups.
    assert decode_step_flops(s) == 2 * 106816 + 8192
    assert arithmetic_intensity(s) == pytest.approx((2 * 106816 + 8192) / (427264 + 8192))
    # Untied: the looked-up embedding does no matmul work, the lm_head does.
    assert decode_step_flops(step(tiny_weights(tied=False))) == 2 * 106816 + 8192
    # Without a cache each step recomputes 16 tokens per sequence (no attention term here).
    assert decode_step_flops(step(tiny_weights(), cache="none")) == 2 * 106816 * 16


def test_roofline_pct_only_where_memory_bound() -> None:
    s = step(tiny_weights())
    # 435456 bytes in 1 ms = 0.435456 GB/s, half of 0.870912.
    pct, why = roofline_pct(s, tpot_ms=1.0, bandwidth_gb_per_s=0.870912, ridge_flop_per_byte=8.0)
    assert pct == pytest.approx(50.0) and why == ""
    pct, why = roofline_pct(step(tiny_weights(), cache="none"), 1.0, 1.0, 8.0)
    assert pct is None and "no KV cache" in why
    # Batch 32 in fp32: about 10 FLOP/byte, above a ridge of 8.
    pct, why = roofline_pct(step(tiny_weights(), batch=32), 1.0, 1.0, 8.0)
    assert pct is None and "above the ridge point (8): compute-bound" in why
    with pytest.raises(ValueError):
        step(tiny_weights(), cache="paged")
    with pytest.raises(ValueError):
        WeightBytes(tiny_weights().weights, tied_lm_head="nope")
