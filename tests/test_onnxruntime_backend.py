"""ONNX Runtime engine on the tiny model: export fidelity, greedy tokens, int8 rows, skip reasons.

The first test session on a fresh cache exports the tiny model once (seconds on an idle CPU);
later sessions reuse the cached graph.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.engines.decode import generate
from infer_opt.run.runner import run_suite
from infer_opt.run.suite import load_suite

from .conftest import load_engine, write_suite

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime/onnx not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="module")
def torch_kv() -> Any:
    return load_engine("kv-cache")


@pytest.fixture(scope="module")
def ort_fp32() -> Any:
    return load_engine("ort")


def test_export_matches_torch_logits(ort_fp32: Any, torch_kv: Any) -> None:
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    ort_logits = ort_fp32.score(ids)  # [B, T, V], teacher-forced from past length 0
    ref = torch_kv.score(ids)
    assert ort_logits.shape == ref.shape == (2, 24, 512) and ort_logits.dtype == torch.float32
    assert torch.allclose(ort_logits, ref, atol=1e-4, rtol=1e-4), (ort_logits - ref).abs().max()


def test_greedy_tokens_equal_torch_kv_cache(ort_fp32: Any, torch_kv: Any) -> None:
    prompts = torch.randint(3, 512, (3, 9), generator=torch.Generator().manual_seed(1))
    ours = generate(ort_fp32, prompts, 10, HostClock())
    ref = generate(torch_kv, prompts, 10, HostClock())
    assert ours.tokens.shape == (3, 10)
    assert torch.equal(ours.tokens, ref.tokens)
    assert len(ours.stamps_s) == 10 and ours.stamps_s == sorted(ours.stamps_s)
    # Decode steps through the cached graph agree with a single teacher-forced pass.
    full = torch.cat([prompts, ours.tokens], dim=1)
    scored = ort_fp32.score(full)[:, 8:-1, :].argmax(-1)  # [B, 10]
    assert torch.equal(scored, ours.tokens)


def test_facts_and_provider_note(ort_fp32: Any) -> None:
    facts = ort_fp32.facts
    assert facts.extra["provider"] == "CPUExecutionProvider"
    # Tiny model: 2 layers x 2 kv heads x 16 head dim x K and V x fp32.
    assert facts.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4
    assert facts.weight_bytes > 0
    assert any("CPUExecutionProvider" in n for n in ort_fp32.settings.notes)


def test_suite_rows_ort_and_int8(tmp_path: Path) -> None:
    suite = load_suite(str(write_suite(tmp_path / "s.toml", """
model = "tiny-random"
device = "cpu"
threads = 1
reference = "kv-cache"
[[group]]
variants = ["kv-cache", "ort", "ort+int8-dynamic"]
batch_sizes = [2]
prompt_tokens = 8
new_tokens = 6
min_repeats = 2
max_repeats = 2
warmup_runs = 1
""")))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    for v in ("ort", "ort+int8-dynamic"):
        r = rows[v]
        assert r["status"] == "ok", r["reason"]
        assert (r["engine"], r["kv_cache"], r["dtype"]) == ("ort", "dynamic", "float32")
        assert "CPUExecutionProvider" in r["notes"]
        for col in ("ttft_ms_p50", "tpot_ms_max", "itl_ms_p90", "e2e_ms_p50",
                    "decode_tokens_per_s", "weight_mb", "peak_rss_mb"):
            assert float(r[col]) > 0, col
    # int8 MatMul weights: smaller than the fp32 graph (embedding gather stays fp32).
    assert float(rows["ort+int8-dynamic"]["weight_mb"]) < float(rows["ort"]["weight_mb"])
    samples = {json.loads(x)["variant"]: json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()}
    assert samples["ort"]["tokens"] == samples["kv-cache"]["tokens"]


def test_missing_onnxruntime_skips_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    for v in ("ort", "ort+int8-dynamic"):
        assert build_stack(v, "cpu").unavailable == "ort: package 'onnxruntime' is not installed"


def test_padded_rows_on_the_graph_match_torch(ort_fp32: Any, torch_kv: Any) -> None:
    """Online serving pads rows on the left: the graph's attention_mask must honour it."""
    from infer_opt.engines import decode

    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    out = {}
    for name, engine in (("ort", ort_fp32), ("torch", torch_kv)):
        with engine.context():
            rows, first = decode.prefill(engine, prompts, [0, 1, 2], capacity=12)
            toks = [first] + [decode.decode(engine, rows) for _ in range(4)]
        out[name] = torch.stack(toks, dim=1)
    assert torch.equal(out["ort"], out["torch"])


def test_static_cache_and_bf16_are_refused_up_front() -> None:
    with pytest.raises(UserError, match="'static-cache' works on engines torch"):
        build_stack("ort+static-cache", "cpu")
    with pytest.raises(UserError, match="'bf16' works on engines torch, vllm"):
        build_stack("ort+bf16", "cpu")


def test_int8_uses_7bit_weights_where_int8_kernels_saturate() -> None:
    from infer_opt.engines.onnx.export import INT8_FILES, int8_saturates

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
    vnni = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n"
    assert int8_saturates("x86_64", avx2) is True
    assert int8_saturates("x86_64", vnni) is False
    assert int8_saturates("aarch64", avx2) is False  # ARM kernels accumulate in int32
    assert INT8_FILES[True][0] != INT8_FILES[False][0]  # the two graphs never share a cache file
