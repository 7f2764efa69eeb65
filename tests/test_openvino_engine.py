"""OpenVINO engine: declarations and weight-config mapping everywhere; the engine on the tiny
model where openvino and optimum-intel import (`make test-openvino`, in .venv-openvino); a suite
through its own environment from the main .venv where .venv-openvino exists.

The first session on a fresh cache exports the tiny model once per weight config (~20 s each
on this 2-core CPU); later sessions reuse the cached IRs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.engines.base import environment_reason
from infer_opt.engines.decode import generate
from infer_opt.engines.openvino.export import ir_dir, label, weight_config

from .conftest import load_engine, run_beside_kv_cache

HAS_OPENVINO = all(importlib.util.find_spec(p) is not None for p in ("openvino", "optimum"))
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino/optimum-intel are not installed here (make "
    "setup-openvino builds .venv-openvino; run these tests with make test-openvino)")


# --- everywhere -----------------------------------------------------------------------------
def test_declarations_and_refusals() -> None:
    s = build_stack("openvino", "cpu").settings
    assert (s.engine, s.dtype, s.kv_cache, s.attn_implementation) == (
        "openvino", "float32", "dynamic", "openvino")
    stack = build_stack("openvino[kv_cache_precision=f32]+int4-wo[group=64]", "cpu")
    s = stack.settings
    assert s.options == {"kv_cache_precision": "f32"}
    assert stack.engine.weight_config(s) == {"bits": 4, "group_size": 64, "sym": False,
                                             "ratio": 1.0}
    s = build_stack("openvino+int8-wo", "cpu").settings
    assert stack.engine.weight_config(s) == {"bits": 8, "sym": True}
    refused = {
        "openvino+int4-wo[group=128]": "engine openvino runs 4-bit weights .* with group 16, "
                                       "32, 64; the variant asks for group 128",
        "openvino+int8-wo[group=32]": "engine openvino chooses the group of 8-bit weights",
        "openvino+int4-wo[lm_head=int8]": "engine openvino chooses the lm_head",
        "openvino+int8-dynamic": "'int8-dynamic' works on engines",
        "openvino[weight_bits=4]": "unknown parameter 'weight_bits'",
        "openvino[kv_cache_precision=u8]": "kv_cache_precision must be one of f16, f32",
    }
    for variant, message in refused.items():
        with pytest.raises(UserError, match=message):
            build_stack(variant, "cpu")
    with pytest.raises(UserError, match="'openvino\\+bf16' runs on openvino"):
        build_stack("openvino+bf16", "cpu")


def test_weight_config_mapping_and_cache_keys() -> None:
    assert weight_config(None, None, None) is None
    assert weight_config(8, None, True) == {"bits": 8, "sym": True}
    assert weight_config(4, None, None) == {"bits": 4, "group_size": 32, "sym": False,
                                            "ratio": 1.0}
    configs = [None, weight_config(8, None, True), weight_config(8, None, False),
               weight_config(4, 32, False), weight_config(4, 64, True)]
    assert [label(c) for c in configs] == ["fp32", "int8-sym", "int8-asym", "int4-g32-asym",
                                          "int4-g64-sym"]
    dirs = {ir_dir("some/hub-id", c) for c in configs}
    assert len(dirs) == len(configs)  # one cached IR per config
    assert ir_dir("some/hub-id", configs[3]) == ir_dir("some/hub-id", dict(configs[3]))


def test_missing_environment_skips_with_the_make_target(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFER_OPT_PYTHON_OPENVINO", str(tmp_path / "nowhere" / "python"))
    environment_reason.cache_clear()
    try:
        reason = build_stack("openvino", "cpu").unavailable
    finally:
        environment_reason.cache_clear()
    assert reason is not None and reason.startswith(
        "openvino: needs its own environment .venv-openvino (make setup-openvino)")


# --- in .venv-openvino ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_kv() -> Any:
    return load_engine("kv-cache")


@needs_openvino
def test_fp32_ir_matches_torch(torch_kv: Any) -> None:
    ov = load_engine("openvino[kv_cache_precision=f32]")
    prompts = torch.randint(3, 512, (2, 9), generator=torch.Generator().manual_seed(1))
    ours = generate(ov, prompts, 10, HostClock())
    with torch_kv.context():
        ref = generate(torch_kv, prompts, 10, HostClock())
    assert ours.tokens.shape == (2, 10) and torch.equal(ours.tokens, ref.tokens)
    assert len(ours.stamps_s) == 10 and ours.stamps_s == sorted(ours.stamps_s)
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    got, want = ov.score(ids), torch_kv.score(ids)
    assert got.shape == want.shape == (2, 24, 512)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # The Slice added before the lm_head: a prefill returns the kept positions only.
    from infer_opt.engines.base import StepInput

    pos = torch.arange(24).expand(2, 24)
    last = ov.step(StepInput(ids, pos, None, ov.new_cache(2, 24), 1))
    assert last.shape == (2, 1, 512) and torch.allclose(last[:, 0], got[:, -1], atol=1e-4)
    # What the row records: the IR's weights as stored, tied table read in full, f32 KV.
    f = ov.facts
    assert f.weights.tied_lm_head is not None and f.kv_element_bytes == 4
    assert abs(f.weight_bytes - 4 * 106816) < 4 * 1024  # fp32 parameters (norms may fold)
    assert any("weights fp32" in n and "KV cache f32" in n for n in ov.settings.notes)


@needs_openvino
def test_int8_weights_are_stored_in_8_bits(torch_kv: Any) -> None:
    ov = load_engine("openvino+int8-wo")
    assert ov.facts.weight_bytes < 0.4 * 4 * 106816  # int8 data plus f16 scales
    assert any("weights int8-sym" in n and "KV cache f16" in n for n in ov.settings.notes)
    ids = torch.randint(3, 512, (1, 24), generator=torch.Generator().manual_seed(3))
    got, want = ov.score(ids), torch_kv.score(ids)
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.8


# --- from the main .venv, through the engine's own environment ------------------------------
@pytest.mark.slow  # a worker of the other environment starts (and exports, the first time)
def test_suite_runs_openvino_in_its_environment(tmp_path: Path) -> None:
    reason = environment_reason("openvino", ".venv-openvino", ("openvino", "optimum.intel",
                                                                 "nncf"))
    if reason is not None:
        pytest.skip(reason)
    rows, samples = run_beside_kv_cache(tmp_path, "openvino[kv_cache_precision=f32]")
    row = rows["openvino[kv_cache_precision=f32]"]
    assert row["status"] == "ok", row["reason"]
    assert float(row["kl_mean"]) < 1e-6 and float(row["top1_agreement_pct"]) == 100.0
    assert "openvino" in json.loads(row["package_versions"])
    assert samples["openvino[kv_cache_precision=f32]"]["tokens"] == samples["kv-cache"]["tokens"]
