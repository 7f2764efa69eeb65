"""Quantization plugins, compiled decode and fidelity on the tiny model, plus numerics checks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from infer_opt.core.greedy import greedy_match
from infer_opt.core.models import resolve
from infer_opt.core.stack import build_stack
from infer_opt.engines.torch.engine import TorchEngine, tensor_bytes
from infer_opt.results.table import pareto_front, render
from infer_opt.run.fidelity import compare_logits, stable_log_softmax
from infer_opt.run.runner import run_suite
from infer_opt.run.suite import load_suite

from .conftest import write_suite
from .tables import flat

CPU_QUANT = ["kv-cache+int8-bnb", "kv-cache+nf4-bnb", "kv-cache+fp4-bnb+bf16",
             "kv-cache+int8-wo", "kv-cache+int8-dynamic", "kv-cache+int8-dynamic-ao",
             "kv-cache+int4-wo[group=32]"]
FIDELITY_COLS = ("kl_mean", "kl_max", "top1_agreement_pct", "greedy_match_tokens", "perplexity",
                 "logits_nonfinite_count")

SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
variants = {variants}
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 1
max_repeats = 1
warmup_runs = 1
"""


def _run(tmp: Path, variants: list[str]) -> tuple[list[dict[str, str]], Path]:
    body = SUITE.format(variants="[" + ", ".join(f'"{v}"' for v in variants) + "]")
    suite = load_suite(str(write_suite(tmp / "q.toml", body)))
    csv_path = run_suite(suite, tmp / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh)), csv_path


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, str]], Path]:
    rows, csv_path = _run(tmp_path_factory.mktemp("quant"),
                          ["baseline", "kv-cache+sdpa+bf16"] + CPU_QUANT
                          + ["cuda-graphs"])
    return {r["variant"]: r for r in rows}, csv_path


def test_baseline_against_itself_is_exact(quant_run) -> None:
    rows, _ = quant_run
    r = rows["baseline"]
    assert r["status"] == "ok", r["reason"]
    assert float(r["kl_mean"]) == 0.0 and float(r["kl_max"]) == 0.0
    assert float(r["top1_agreement_pct"]) == 100.0
    assert r["greedy_match_tokens"] == "32" and r["logits_nonfinite_count"] == "0"


@pytest.mark.parametrize("variant", CPU_QUANT)
def test_cpu_quant_rows_are_ok_with_fidelity(quant_run, variant: str) -> None:
    rows, _ = quant_run
    r = rows[variant]
    assert r["status"] == "ok", r["reason"]
    assert "fidelity failed" not in r["notes"]
    for col in FIDELITY_COLS:
        assert r[col] != "", col
    assert 0 <= float(r["kl_mean"]) <= float(r["kl_max"])
    # Quantization shrinks the weights (the tiny model's fp32 embedding dominates, so < 1x).
    assert 0 < float(r["weight_mb"]) < float(rows["baseline"]["weight_mb"])


def test_cuda_only_rows_are_skipped_with_reason(quant_run) -> None:
    rows, csv_path = quant_run
    assert rows["cuda-graphs"]["reason"] == "cuda-graphs: needs CUDA (device is cpu)"
    assert "deprecated API" in rows["kv-cache+int8-dynamic-ao"]["notes"]
    table = flat(render(csv_path))
    assert "KL mean" in table and "Speedup vs fidelity" in table


@pytest.mark.parametrize("variant, ratio", [("int8-wo", 0.25), ("int8-bnb", 0.25),
                                            ("int8-dynamic", 0.25), ("nf4-bnb", 0.125)])
def test_quantized_linear_weight_bytes(variant: str, ratio: float) -> None:
    """Bytes of the quantized decoder Linears vs their fp32 size: int8 ~1/4, 4-bit ~1/8 (plus
    scales, which are relatively large on the tiny model's 64-wide rows)."""
    ref = resolve("tiny-random")
    model = TorchEngine(ref, build_stack(variant, "cpu").settings).model
    linears = [m for name, m in model.named_modules()
               if name.startswith("model.layers") and isinstance(m, torch.nn.Linear)]
    # bnb 4-bit weights have a packed shape; the module keeps the logical one.
    fp32 = sum(m.in_features * m.out_features * 4 for m in linears)
    stored = sum(tensor_bytes(m.weight) for m in linears)
    assert ratio <= stored / fp32 < ratio * 1.35


def test_torch_ao_dynamic_weight_bytes_count_packed_weights() -> None:
    ref = resolve("tiny-random")
    fp32 = TorchEngine(ref, build_stack("kv-cache", "cpu").settings).facts.weight_bytes
    q = TorchEngine(ref, build_stack("int8-dynamic-ao", "cpu").settings).facts.weight_bytes
    assert 0.3 * fp32 < q < 0.9 * fp32  # embedding stays fp32; every Linear is int8


@pytest.mark.slow
def test_compile_row(tmp_path: Path) -> None:
    """torch.compile on CPU: ~20 s to minutes of inductor compilation, hence `slow`."""
    rows, _ = _run(tmp_path, ["int8-wo+bf16+compile"])
    r = rows[0]
    assert r["status"] == "ok", r["reason"]
    assert r["kv_cache"] == "static" and float(r["compile_s"]) > 0
    assert float(r["compile_s"]) * 1e3 > float(r["tpot_ms_max"])  # compilation is not in TPOT
    assert r["kl_mean"] != ""


def test_compile_refuses_a_dynamic_cache() -> None:
    from infer_opt.core.errors import UserError

    with pytest.raises(UserError, match="kv_cache"):
        build_stack("kv-cache+compile", "cpu")
    stack = build_stack("static-cache+compile", "cpu")
    settings = stack.settings
    assert stack.unavailable is None and settings.kv_cache == "static" and settings.step_wrappers


# --- fidelity arithmetic ------------------------------------------------------------------
def test_compare_logits_self_is_zero_and_flags_nonfinite() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 50, generator=g) * 10
    same = compare_logits(logits, logits.clone())
    assert same == {"kl_mean": 0.0, "kl_max": 0.0, "top1_agreement_pct": 100.0,
                    "logits_nonfinite_count": 0}
    bad = logits.clone()
    bad[0, 1, 3] = float("inf")
    bad[1, 4, 0] = float("nan")
    res = compare_logits(logits, bad)
    assert res["logits_nonfinite_count"] == 2
    assert res["kl_max"] == float("inf") and res["kl_mean"] == float("inf")
    assert res["top1_agreement_pct"] == pytest.approx(80.0)


def test_greedy_match_is_min_prefix() -> None:
    ref = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert greedy_match(ref, ref) == 4
    assert greedy_match(torch.tensor([[1, 2, 9, 4], [5, 6, 7, 8]]), ref) == 2


def test_pareto_front() -> None:
    # (speedup, kl): the second is slower and worse than the first; the third trades.
    assert pareto_front([(3.0, 0.1), (2.0, 0.2), (1.0, 0.0)]) == [True, False, True]


# --- numerics -------------------------------------------------------------------------------
def test_stable_softmax_on_large_fp16_logits() -> None:
    logits = torch.tensor([[60000.0, 59990.0, -60000.0, 0.0]], dtype=torch.float16)
    naive = logits.exp() / logits.exp().sum(-1, keepdim=True)  # exp overflows to inf -> nan
    assert not torch.isfinite(naive).all()
    stable = stable_log_softmax(logits)
    assert torch.isfinite(stable).all()
    assert stable.exp().sum().item() == pytest.approx(1.0)
    # fp16 logits that did overflow upstream (inf) are flagged, not silently averaged.
    overflowed = logits.float().clone()
    overflowed[0, 0] = float("inf")
    assert compare_logits(logits.float()[None], overflowed[None])["logits_nonfinite_count"] == 1


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-4), ("bfloat16", 0.25)])
def test_sdpa_and_eager_attention_agree(dtype: str, atol: float) -> None:
    ref = resolve("tiny-random")
    ids = torch.randint(3, ref.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    out = {}
    for attn in ("eager", "sdpa"):
        settings = build_stack("kv-cache", "cpu").settings
        settings.dtype, settings.attn_implementation = dtype, attn
        out[attn] = TorchEngine(ref, settings).score(ids)
    assert torch.allclose(out["eager"], out["sdpa"], atol=atol, rtol=0)


def test_eval_mode_gives_identical_logits() -> None:
    """Dropout is configured on (p=0.5) to prove the engine's eval() really switches it off."""
    ref = resolve("tiny-random")
    settings = build_stack("baseline", "cpu").settings
    settings.load_kwargs["attention_dropout"] = 0.5
    backend = TorchEngine(ref, settings)
    assert not backend.model.training
    ids = torch.randint(3, ref.vocab_size, (1, 16), generator=torch.Generator().manual_seed(2))
    assert torch.equal(backend.score(ids), backend.score(ids))
    backend.model.train()  # the same model with dropout active does differ between runs
    with torch.no_grad():
        a = backend.model(input_ids=ids).logits
        b = backend.model(input_ids=ids).logits
    assert not torch.equal(a, b)
