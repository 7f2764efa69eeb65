"""ort-genai engine and gguf-q4: onnxruntime-genai's fused graph in the suite's decode loop.

On the tiny random model (graph built once per cache, ~15 s on a fresh one) and on a tiny GGUF
written here (tests/tiny_gguf.py): the GGUF's blocks carried into the graph must give the fp32
model's logits at accuracy 0. The real SmolLM2 check is marked slow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.models import resolve
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.core.weights import WeightQuant
from infer_opt.engines import decode
from infer_opt.engines.base import StepInput
from infer_opt.engines.decode import generate
from infer_opt.engines.onnx.nbits import weight_spec

from .conftest import load_engine
from .tiny_gguf import make_model_dir

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("onnxruntime", "onnx", "onnxruntime_genai")),
    reason="onnxruntime/onnx/onnxruntime-genai not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="module")
def genai() -> Any:
    return load_engine("ort-genai")


@pytest.fixture(scope="module")
def torch_kv() -> Any:
    return load_engine("kv-cache")


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_model_dir(tmp_path_factory.mktemp("gguf") / "tiny-gguf"))


def test_fused_graph_matches_torch(genai: Any, torch_kv: Any) -> None:
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    ours, ref = genai.score(ids), torch_kv.score(ids)
    assert ours.shape == ref.shape == (2, 24, 512) and ours.dtype == torch.float32
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()
    facts = genai.facts
    assert facts.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4  # layers x K,V x kv heads x dim x fp32
    # The tied table: looked up by Gather (through a Transpose) and read whole by lm_head.
    assert facts.weights.tied_lm_head == "lm_head.MatMul.weight"
    assert "onnxruntime-genai" in genai.settings.notes[0]


def test_static_batch_greedy_equals_torch(genai: Any, torch_kv: Any) -> None:
    prompts = torch.randint(3, 512, (3, 9), generator=torch.Generator().manual_seed(1))
    ours = generate(genai, prompts, 10, HostClock())
    ref = generate(torch_kv, prompts, 10, HostClock())
    assert torch.equal(ours.tokens, ref.tokens)
    assert len(ours.stamps_s) == 10 and ours.stamps_s == sorted(ours.stamps_s)
    # Again with the same shape: the reused KV buffers hold the previous request's slots.
    assert torch.equal(generate(genai, prompts, 10, HostClock()).tokens, ref.tokens)


def test_logits_to_keep_and_crop(genai: Any) -> None:
    """A verify step keeps K positions' logits; crop rewinds the shared buffers."""
    ids = torch.randint(3, 512, (1, 12), generator=torch.Generator().manual_seed(2))
    full = genai.score(ids)
    cache = genai.new_cache(1, 16)
    genai.step(StepInput(ids[:, :8], torch.arange(8)[None], None, cache, 1))
    out = genai.step(StepInput(ids[:, 8:], torch.arange(8, 12)[None], None, cache, 4))
    assert out.shape == (1, 4, 512)
    assert torch.allclose(out, full[:, 8:], atol=1e-5)
    cache = genai.crop(cache, 10)  # drop two slots, feed them again
    again = genai.step(StepInput(ids[:, 10:], torch.arange(10, 12)[None], None, cache, 2))
    assert torch.allclose(again, full[:, 10:], atol=1e-5)
    with pytest.raises(ValueError, match="positions must follow"):
        genai.step(StepInput(ids[:, :1], torch.tensor([[3]]), None, cache, 1))


def test_speculative_lookup_keeps_the_answer(genai: Any) -> None:
    spec = load_engine("ort-genai+spec-lookup[k=3]")
    prompt = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7]])
    with spec.context():
        fast = generate(spec, prompt, 12, HostClock())
    assert torch.equal(fast.tokens, generate(genai, prompt, 12, HostClock()).tokens)
    assert spec.settings.counters["spec_drafted"] > 0


def test_no_padded_rows(genai: Any) -> None:
    """GQA cannot honour left padding: online groups are refused up front, and a padded step
    fails instead of returning wrong logits."""
    from infer_opt.run.plan import check_fit
    from infer_opt.workloads.online.workload import OnlineWorkload

    assert build_stack("ort-genai", "cpu").engine.row_ops is False
    online = OnlineWorkload.from_group({"policies": ["continuous"], "arrival": "offline",
                                        "num_requests": 4, "prompt_tokens": 8,
                                        "new_tokens": 4})[0]
    with pytest.raises(UserError, match="joins rows of different lengths"):
        check_fit(build_stack("ort-genai", "cpu"), online, "group g")
    with pytest.raises(ValueError, match="padded rows"):
        decode.prefill(genai, [[5, 6, 7], [8, 9]], [0, 1], capacity=8)


def test_weight_options_are_checked_up_front() -> None:
    for variant, needle in (
            ("ort-genai+gguf-q4+int4-wo", "both set weight quantization"),
            ("ort-genai[weight_bits=4]", "unknown parameter 'weight_bits'"),
            ("ort-genai[fuse_gate_up=false]", "option fuse_gate_up shapes the GGUF's own"),
            ("ort+int8-dynamic+int8-wo", "both set weight quantization"),
            ("ort-genai+int8-dynamic", "'int8-dynamic' works on engines"),
            ("ort+gguf-q4", "'gguf-q4' works on engines ort-genai"),
            ("ort-genai+sdpa", "'sdpa' works on engines torch, ort")):
        with pytest.raises(UserError, match=needle):
            build_stack(variant, "cpu")
    s = build_stack("ort-genai+int4-wo[group=64,accuracy=1]", "cpu").settings
    assert s.options == {} and s.weights == WeightQuant(4, group=64, symmetric=False, accuracy=1)
    spec = weight_spec(s, "tiny-random")
    assert (spec.source, spec.bits, spec.block, spec.symmetric, spec.accuracy, spec.lm_head) == (
        "rtn", 4, 64, False, 1, "int8")
    assert build_stack("ort-genai+gguf-q4", "cpu").unavailable.startswith("gguf-q4: no GGUF")


def test_rtn_copies_are_cached_and_smaller(genai: Any) -> None:
    q4 = load_engine("ort-genai+int4-wo[lm_head=fp32]")
    assert q4.facts.weight_bytes < genai.facts.weight_bytes
    assert "MatMulNBits 4-bit, block 32, asymmetric" in q4.settings.notes[0]
    path = Path(q4.facts.extra["onnx_path"])
    assert path.parent == Path(genai.facts.extra["onnx_path"]).parent  # beside the fp32 build
    assert "rtn" in path.name and (path.parent / (path.name + ".data")).is_file()
    ids = torch.randint(3, 512, (1, 16), generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(q4.score(ids)).all()


def test_gguf_blocks_are_exact_at_accuracy_0(gguf_model: str) -> None:
    ref = resolve(gguf_model)
    exact = build_stack("ort-genai+gguf-q4[accuracy=0]", "cpu", gguf_model)
    assert exact.unavailable is None
    assert exact.settings.options == {} and exact.settings.weights == WeightQuant(
        4, source="gguf", accuracy=0, lm_head="fp32")
    ort = exact.engine(ref, exact.settings)
    torch_stack = build_stack("kv-cache", "cpu", gguf_model)
    torch_kv = torch_stack.engine(ref, torch_stack.settings)
    ids = torch.randint(3, 512, (2, 20), generator=torch.Generator().manual_seed(4))
    ours, want = ort.score(ids), torch_kv.score(ids)
    assert torch.allclose(ours, want, atol=1e-4, rtol=1e-4), (ours - want).abs().max()
    prompts = ids[:, :8]
    assert torch.equal(generate(ort, prompts, 8, HostClock()).tokens,
                       generate(torch_kv, prompts, 8, HostClock()).tokens)
    assert "GGUF blocks carried over (tiny.Q4_1.gguf" in ort.settings.notes[0]
    # The fast form (int8 activations, the GGUF's Q8_0 lm_head) runs and stays close.
    fast = build_stack("ort-genai+gguf-q4", "cpu", gguf_model)
    assert fast.settings.weights.lm_head == "int8"
    approx = fast.engine(ref, fast.settings).score(ids)
    assert (approx - want).abs().mean() < 0.02 and not torch.allclose(approx, want, atol=1e-4)


def test_a_foreign_gguf_is_refused(gguf_model: str, tmp_path: Path) -> None:
    from infer_opt.engines.onnx.genai_build import ensure_graph
    from infer_opt.engines.onnx.nbits import WeightSpec, make_variant

    from .tiny_gguf import write_gguf

    other = tmp_path / "other.gguf"
    write_gguf(other, seed=1)
    base, _ = ensure_graph(gguf_model, 1)
    spec = WeightSpec(source="gguf-q4", accuracy=0, gguf=str(other), gguf_digest="x")
    with pytest.raises(ValueError, match="differ from the graph's weight"):
        make_variant(base, tmp_path / "model.onnx", spec)


@pytest.mark.slow
def test_gguf_q4_exact_on_smollm2() -> None:
    """The real model: GGUF blocks at accuracy 0 against the pinned fp32 baseline."""
    from infer_opt.core.models import load_tokenizer
    from infer_opt.run.fidelity import compare_logits, load_reference

    ref = resolve("smollm2-135m")
    stack = build_stack("ort-genai+gguf-q4[accuracy=0]", "cpu", "smollm2-135m")
    engine = stack.engine(ref, stack.settings)
    reference = load_reference(ref, "cpu", load_tokenizer(ref))
    seq = torch.cat([reference.prompts, reference.greedy], dim=1)
    p = reference.prompts.shape[1]
    result = compare_logits(reference.logits, engine.score(seq)[:, p - 1:-1, :])
    assert result["kl_mean"] < 1e-9 and result["top1_agreement_pct"] == 100.0, result
    # 128 greedy tokens after a 128-token prompt, against the fp32 torch loop.
    torch_stack = build_stack("kv-cache", "cpu", "smollm2-135m")
    torch_kv = torch_stack.engine(ref, torch_stack.settings)
    prompt = torch.from_numpy(np.random.default_rng(0).integers(3, 40000, (1, 128)))
    ours = generate(engine, prompt, 128, HostClock()).tokens
    assert torch.equal(ours, generate(torch_kv, prompt, 128, HostClock()).tokens)
