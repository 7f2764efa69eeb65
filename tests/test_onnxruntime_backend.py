"""ONNX Runtime backend on the tiny model: export fidelity, greedy tokens, int8 rows, skip reasons.

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
from infer_opt.core.models import TINY_MODEL, resolve
from infer_opt.core.plugin import build_settings, parse_variant
from infer_opt.run.runner import run_suite
from infer_opt.run.suite import load_suite
from infer_opt.core.timing import HostClock

from .conftest import write_suite

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime/onnx not installed (pip install -e '.[onnx]')")


def _backend(variant: str) -> Any:
    from infer_opt.engines import backend_class

    settings, reason = build_settings(parse_variant(variant), "cpu")
    assert reason is None
    return backend_class(settings.backend)(resolve(TINY_MODEL), settings)


@pytest.fixture(scope="module")
def torch_kv() -> Any:
    return _backend("kv-cache")


@pytest.fixture(scope="module")
def ort_fp32() -> Any:
    return _backend("ort")


def test_export_matches_torch_logits(ort_fp32: Any, torch_kv: Any) -> None:
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    ort_logits = ort_fp32.score(ids)  # [B, T, V], teacher-forced from past length 0
    ref = torch_kv.score(ids)
    assert ort_logits.shape == ref.shape == (2, 24, 512) and ort_logits.dtype == torch.float32
    assert torch.allclose(ort_logits, ref, atol=1e-4, rtol=1e-4), (ort_logits - ref).abs().max()


def test_greedy_tokens_equal_torch_kv_cache(ort_fp32: Any, torch_kv: Any) -> None:
    prompts = torch.randint(3, 512, (3, 9), generator=torch.Generator().manual_seed(1))
    ours = ort_fp32.run_batch(prompts, 10, HostClock())
    ref = torch_kv.run_batch(prompts, 10, HostClock())
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
variants = ["kv-cache", "ort", "ort-int8", "ort+ort-int8"]
batch_sizes = [2]
prompt_tokens = 8
new_tokens = 6
repeats = 2
warmup_runs = 1
""")))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    for v in ("ort", "ort-int8", "ort+ort-int8"):
        r = rows[v]
        assert r["status"] == "ok", r["reason"]
        assert (r["backend"], r["kv_cache"], r["dtype"]) == ("onnxruntime", "dynamic", "float32")
        assert "CPUExecutionProvider" in r["notes"]
        for col in ("ttft_ms_p50", "tpot_ms_p99", "itl_ms_p90", "e2e_ms_p50",
                    "decode_tokens_per_s", "weight_mb", "peak_rss_mb"):
            assert float(r[col]) > 0, col
    # int8 MatMul weights: smaller than the fp32 graph (embedding gather stays fp32).
    assert float(rows["ort-int8"]["weight_mb"]) < float(rows["ort"]["weight_mb"])
    assert rows["ort-int8"]["weight_mb"] == rows["ort+ort-int8"]["weight_mb"]
    samples = {json.loads(x)["variant"]: json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()}
    assert samples["ort"]["tokens"] == samples["kv-cache"]["tokens"]


def test_missing_onnxruntime_skips_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    for v in ("ort", "ort-int8"):
        _, reason = build_settings([v], "cpu")
        assert reason == f"{v}: package 'onnxruntime' is not installed"


def test_stacks() -> None:
    s, _ = build_settings(parse_variant("ort-int8"), "cpu")
    assert (s.backend, s.kv_cache, s.options.get("ort_int8")) == ("onnxruntime", "dynamic", True)
    s, _ = build_settings(parse_variant("ort"), "cpu")
    assert not s.options.get("ort_int8")
    with pytest.raises(UserError, match="kv_cache"):
        build_settings(parse_variant("ort+baseline"), "cpu")
    with pytest.raises(UserError, match="kv_cache"):
        build_settings(parse_variant("ort+static-cache"), "cpu")


def test_bf16_is_refused_by_the_backend() -> None:
    with pytest.raises(UserError, match="float32 or float16"):
        _backend("ort+bf16")


def test_int8_uses_7bit_weights_where_int8_kernels_saturate() -> None:
    from infer_opt.engines.onnx_export import INT8_FILES, int8_saturates

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
    vnni = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n"
    assert int8_saturates("x86_64", avx2) is True
    assert int8_saturates("x86_64", vnni) is False
    assert int8_saturates("aarch64", avx2) is False  # ARM kernels accumulate in int32
    assert INT8_FILES[True][0] != INT8_FILES[False][0]  # the two graphs never share a cache file
