"""KV-cache quantization on the tiny random model: the cache really stores quantized K/V (bytes
and dtype of what it holds, not a flag), its logits stay near fp32 within a stated bound, and
bad KV types are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from infer_opt.engines.base import StepInput
from infer_opt.engines.decode import prefill_context
from infer_opt.workloads.static_batch import StaticBatch

from .conftest import load_engine, write_suite
from .test_cli_errors import assert_one_line_error, cli
from .test_depth import VALUES_PER_TOKEN, session_for

pytest.importorskip("hqq")

GROUP = 64
# HQQ stores `bits` of uint8 data per value plus an fp32 scale and zero point per 64 values.
BYTES_PER_VALUE = {8: 1 + 2 * 4 / GROUP, 4: 0.5 + 2 * 4 / GROUP}


@pytest.mark.parametrize("bits", [8, 4])
def test_cache_really_stores_quantized_kv(bits: int) -> None:
    d, p, n = 200, 8, 4  # the 200-token context is quantized; 11 newer tokens stay fp32
    w = StaticBatch(batch_size=1, prompt_tokens=p, new_tokens=n, depth_tokens=d)
    session, _, engine = session_for(f"kv-int{bits}", w)
    assert engine.facts.kv_bytes_per_token == VALUES_PER_TOKEN * BYTES_PER_VALUE[bits]
    session.warm_up()
    session.run_once(0)
    rows, restore = session._at_depth
    cache = restore()
    for layer in cache.layers:
        data, meta = layer._quantized_keys
        assert data.dtype == torch.uint8 and meta["nbits"] == bits
        # [1, 2 heads, 200, 16] keys of one layer: 6400 values in bits / 8 bytes each.
        assert data.numel() * data.element_size() == 6400 * bits // 8
        assert meta["scale"].numel() == meta["zero"].numel() == 6400 // GROUP
    kv = session.kv
    residual = (p + n - 1) * VALUES_PER_TOKEN * 4  # the newest tokens, in fp32
    assert kv.used_bytes == kv.allocated_bytes == d * VALUES_PER_TOKEN * BYTES_PER_VALUE[bits] \
        + residual
    assert kv.dtype.startswith(f"int{bits} (hqq uint8 data, group 64")
    # Less than half (int8) or a quarter (int4) of what fp32 would hold for the context.
    assert kv.used_bytes - residual < (d * VALUES_PER_TOKEN * 4) * bits / 16


@pytest.mark.parametrize("bits,bound", [(8, 0.05), (4, 1.0)])
def test_logits_near_fp32_within_a_bound(bits: int, bound: float) -> None:
    """Logits of the token after a 200-token quantized context vs an fp32 cache. Bound:
    the tiny model's logits span about +-1; int8 with groups of 64 rounds each value to
    1/255 of its group's range, int4 to 1/15 of it."""
    ids = torch.randint(3, 512, (1, 201), generator=torch.Generator().manual_seed(0))
    out = {}
    for variant in ("kv-cache", f"kv-int{bits}"):
        engine = load_engine(variant)
        with engine.context():
            rows = prefill_context(engine, ids[:, :200], 256, chunk=200)
            # The 200 context tokens are quantized (lazy init); this step reads them back.
            logits = engine.step(StepInput(ids[:, 200:], torch.tensor([[200]]), None,
                                           rows.cache, 1))
        out[variant] = logits.float()
    diff = (out[f"kv-int{bits}"] - out["kv-cache"]).abs().max().item()
    assert 0 < diff < bound, diff  # really quantized (not bit-identical), and close


@pytest.mark.parametrize("variant,needles", [
    ("kv-int8+static-cache", ("both set kv_cache",)),
    ("kv-int8[group_size=48]", ("group_size must be one of 32, 64, 128",)),
    ("torch[kv_cache_type=fp8]", ("kv_cache_type must be one of model, int8, int4",)),
])
def test_bad_kv_types_are_refused(tmp_path: Path, variant: str, needles: tuple[str, ...]) -> None:
    body = f"""
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
variants = ["{variant}"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 1
max_repeats = 1
"""
    suite = write_suite(tmp_path / "s.toml", body)
    out = tmp_path / "results"
    assert_one_line_error(cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path),
                          *needles)
    assert not out.exists()


def test_fidelity_scores_through_the_quantized_cache() -> None:
    """score() of kv-int4 must read the quantized cache: a cache-less forward would return the
    fp32 model's logits and a KL of 0 for a row named kv-int4."""
    ids = torch.randint(3, 512, (2, 64), generator=torch.Generator().manual_seed(3))
    fp32, int4 = load_engine("kv-cache").score(ids), load_engine("kv-int4").score(ids)
    assert int4.shape == fp32.shape == (2, 64, 512)
    # The first half is prefilled (its own attention is exact); the second half reads it back.
    assert torch.allclose(int4[:, :32], fp32[:, :32], atol=1e-5)
    assert (int4[:, 32:] - fp32[:, 32:]).abs().max() > 1e-4


def test_fidelity_at_depth_reads_the_quantized_cache() -> None:
    """kl_at_depth: along the fp32 kv-cache reference's continuation of the row's own
    200-token context; the fp32 row matches it, the int4 row reads a quantized context."""
    kl = {}
    for variant in ("kv-cache", "kv-int4"):
        w = StaticBatch(batch_size=1, prompt_tokens=8, new_tokens=6, depth_tokens=200,
                        min_repeats=2)
        session, _, _ = session_for(variant, w)
        session.warm_up()
        session.run_once(0)
        session.run_once(1)
        row: dict = {}
        session.finish(row, {})
        assert "fidelity at depth failed" not in "; ".join(session.ctx.settings.notes)
        kl[variant] = (float(row["kl_at_depth_mean"]), float(row["top1_at_depth_pct"]))
    assert kl["kv-cache"] == (0.0, 100.0)  # the same computation as the reference
    assert kl["kv-int4"][0] > 1e-6



@pytest.mark.parametrize("variant, workload, needle", [
    ("kv-int8", "online", "joins rows of different lengths"),
    ("kv-int8+spec-lookup", "static-batch", "cannot be cropped"),
])
def test_a_quantized_cache_is_refused_where_rows_move_or_crop(
        tmp_path: Path, variant: str, workload: str, needle: str) -> None:
    suite = write_suite(tmp_path / "s.toml", f"""
model = "tiny-random"
device = "cpu"
[[group]]
workload = "{workload}"
variants = ["{variant}"]
""")
    out = tmp_path / "r"
    assert_one_line_error(cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path),
                          needle)
    assert not out.exists()
