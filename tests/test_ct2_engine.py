"""CTranslate2 engine: declarations and model.bin byte counting everywhere; the engine on the
tiny model where ctranslate2 imports (`make test-ct2`, in .venv-ct2); a suite through its own
environment from the main .venv where .venv-ct2 exists.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.core.weights import WeightQuant
from infer_opt.engines.base import environment_reason
from infer_opt.engines.ct2.export import model_bin_weights, read_model_bin
from infer_opt.engines.decode import generate

from .conftest import load_engine, run_beside_kv_cache

HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
needs_ct2 = pytest.mark.skipif(
    not HAS_CT2, reason="ctranslate2 is not installed here (make setup-ct2 builds .venv-ct2; "
    "run these tests with make test-ct2)")


# --- everywhere -----------------------------------------------------------------------------
def test_declarations_and_refusals() -> None:
    s = build_stack("ct2", "cpu").settings
    assert (s.engine, s.dtype, s.kv_cache, s.options) == ("ct2", "float32", "dynamic", {})
    s = build_stack("ct2+int8-dynamic", "cpu").settings
    assert s.options == {} and s.owners["weights"] == "int8-dynamic"
    assert s.weights == WeightQuant(8, activations="int8")
    with pytest.raises(UserError, match="unknown parameter 'compute_type'"):
        build_stack("ct2[compute_type=int8]", "cpu")
    with pytest.raises(UserError, match="'int8-wo' works on engines"):
        build_stack("ct2+int8-wo", "cpu")
    with pytest.raises(UserError, match="'ct2\\+bf16' runs on ct2"):
        build_stack("ct2+bf16", "cpu")


def test_workloads_that_need_the_decode_loop_are_refused() -> None:
    from infer_opt.run.plan import check_fit
    from infer_opt.workloads.online.workload import OnlineWorkload
    from infer_opt.workloads.static_batch import StaticBatch

    stack = build_stack("ct2", "cpu")
    check_fit(stack, StaticBatch(batch_size=4), "g")  # batches: its own loop takes them
    with pytest.raises(UserError, match="engine ct2 .* schedules requests itself"):
        check_fit(stack, OnlineWorkload(), "g")


def test_missing_environment_skips_with_the_make_target(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFER_OPT_PYTHON_CT2", str(tmp_path / "nowhere" / "python"))
    environment_reason.cache_clear()
    try:
        reason = build_stack("ct2+int8-dynamic", "cpu").unavailable
    finally:
        environment_reason.cache_clear()
    assert reason is not None and reason.startswith(
        "ct2: needs its own environment .venv-ct2 (make setup-ct2)")


def _model_bin(path: Path, variables: list[tuple[str, list[int], int, int]],
               aliases: dict[str, str]) -> Path:
    """A model.bin as ctranslate2's ModelSpec._serialize writes it (binary version 6)."""
    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = struct.pack("<I", 6) + string("TransformerDecoderModelSpec") + struct.pack("<I", 8)
    out += struct.pack("<I", len(variables))
    for name, shape, dtype_id, nbytes in variables:
        out += string(name) + struct.pack("<B", len(shape))
        out += b"".join(struct.pack("<I", d) for d in shape)
        out += struct.pack("<BI", dtype_id, nbytes) + b"\0" * nbytes
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += string(alias) + string(target)
    path.write_bytes(out)
    return path


def test_model_bin_bytes_as_stored(tmp_path: Path) -> None:
    """int8 weights count 1 byte each plus their float32 row scales; scalars (settings) are not
    weights; an alias is stored once; the table is a lookup unless the projection aliases it."""
    variables = [
        ("decoder/num_heads", [], 2, 2),  # int16 setting
        ("decoder/embeddings/weight", [100, 8], 1, 800),  # int8
        ("decoder/embeddings/weight_scale", [100], 0, 400),  # float32 per row
        ("decoder/layer_0/ffn/linear_0/weight", [16, 8], 1, 128),
        ("decoder/layer_0/ffn/linear_0/weight_scale", [16], 0, 64),
        ("decoder/layer_0/ffn/layer_norm/gamma", [8], 0, 32),
    ]
    path = _model_bin(tmp_path / "model.bin", variables,
                      {"decoder/layer_norm/gamma": "decoder/layer_0/ffn/layer_norm/gamma"})
    assert read_model_bin(path)[1] == {"decoder/layer_norm/gamma":
                                       "decoder/layer_0/ffn/layer_norm/gamma"}
    weights, per_dtype = model_bin_weights(path)
    assert per_dtype == {"int8": 928, "float32": 496}
    assert weights.tied_lm_head is None
    rows = {w.name: w.lookup_rows for w in weights.weights}
    assert rows["decoder/embeddings/weight"] == rows["decoder/embeddings/weight_scale"] == 100
    assert rows["decoder/layer_0/ffn/linear_0/weight"] == 0
    tied = _model_bin(tmp_path / "tied.bin", variables,
                      {"decoder/projection/weight": "decoder/embeddings/weight"})
    weights, _ = model_bin_weights(tied)
    assert weights.tied_lm_head == "decoder/embeddings/weight"
    assert all(w.lookup_rows == 0 for w in weights.weights)


# --- in .venv-ct2 ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_kv() -> Any:
    return load_engine("kv-cache")


@needs_ct2
def test_greedy_tokens_and_logits_equal_torch(torch_kv: Any) -> None:
    ct2 = load_engine("ct2")
    prompts = torch.randint(3, 512, (3, 9), generator=torch.Generator().manual_seed(1))
    ours = generate(ct2, prompts, 10, HostClock())
    with torch_kv.context():
        ref = generate(torch_kv, prompts, 10, HostClock())
    assert ours.tokens.shape == (3, 10) and torch.equal(ours.tokens, ref.tokens)
    assert len(ours.stamps_s) == 10 and ours.stamps_s == sorted(ours.stamps_s)
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    got, want = ct2.score(ids), torch_kv.score(ids)
    assert got.shape == want.shape == (2, 24, 512) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert ct2.facts.weights.tied_lm_head == "decoder/embeddings/weight"


@needs_ct2
def test_int8_compute_type(torch_kv: Any) -> None:
    ct2 = load_engine("ct2+int8-dynamic")
    assert any("compute_type int8" in n and "int8" in n.split("weights stored")[1]
               for n in ct2.settings.notes)
    assert ct2.facts.weight_bytes < 0.4 * 4 * 106816
    run = generate(ct2, torch.randint(3, 512, (1, 9)), 6, HostClock())
    assert run.tokens.shape == (1, 6)


# --- from the main .venv, through the engine's own environment ------------------------------
@pytest.mark.slow  # a worker of the other environment starts (and converts, the first time)
def test_suite_runs_ct2_in_its_environment(tmp_path: Path) -> None:
    reason = environment_reason("ct2", ".venv-ct2", ("ctranslate2",))
    if reason is not None:
        pytest.skip(reason)
    rows, samples = run_beside_kv_cache(tmp_path, "ct2")
    assert rows["ct2"]["status"] == "ok", rows["ct2"]["reason"]
    assert float(rows["ct2"]["kl_mean"]) < 1e-6
    assert "stamps from its iterator" in rows["ct2"]["notes"]
    assert samples["ct2"]["tokens"] == samples["kv-cache"]["tokens"]
