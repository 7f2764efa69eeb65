"""llama.cpp engine: its declarations and GGUF byte counting everywhere; the engine itself on
the tiny model where llama-cpp-python imports (`make test-llamacpp`, in .venv-llamacpp); and a
suite through its own environment from the main .venv where .venv-llamacpp exists.

The tiny model has no GGUF of its own: the engine writes it as an F32 GGUF once (cached), so
with an f32 KV cache llama.cpp computes what torch computes, up to float rounding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.engines.base import environment_reason
from infer_opt.engines.decode import generate
from infer_opt.engines.llamacpp.gguf_file import (
    permute_rope,
    read_facts,
    write_llama_gguf,
)

from .conftest import load_engine, run_beside_kv_cache

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed here (make setup-llamacpp "
    "builds .venv-llamacpp; run these tests with make test-llamacpp)")


# --- everywhere -----------------------------------------------------------------------------
def test_declarations_and_refusals() -> None:
    s = build_stack("llamacpp[kv_cache_type=f32,n_ctx=512]", "cpu").settings
    assert (s.engine, s.kv_cache, s.dtype, s.attn_implementation) == (
        "llamacpp", "dynamic", "gguf", "llamacpp")
    assert s.options == {"kv_cache_type": "f32", "n_ctx": 512}
    with pytest.raises(UserError, match="kv_cache_type must be one of f32, f16, q8_0, q4_0; "
                                        "got 'q5_1'"):
        build_stack("llamacpp[kv_cache_type=q5_1]", "cpu")
    with pytest.raises(UserError, match="type_k must be one of f32, f16, q8_0, q4_0; got 'int8'"):
        build_stack("llamacpp[type_k=int8]", "cpu")
    # llama.cpp quantizes V only inside its flash-attention kernel.
    with pytest.raises(UserError, match="type_v q8_0 needs flash_attn=true"):
        build_stack("llamacpp[kv_cache_type=q8_0]", "cpu")
    s = build_stack("llamacpp[type_k=q8_0,type_v=q4_0,flash_attn=true]", "cpu").settings
    assert s.options == {"type_k": "q8_0", "type_v": "q4_0", "flash_attn": True}
    # A depth beyond n_ctx is refused before anything loads.
    from infer_opt.run.plan import check_fit
    from infer_opt.workloads.static_batch import StaticBatch

    stack = build_stack("llamacpp[n_ctx=512]", "cpu")
    with pytest.raises(UserError, match="= 1040 do not fit 'llamacpp\\[n_ctx=512\\]', which "
                                        "holds 512 tokens per sequence"):
        check_fit(stack, StaticBatch(prompt_tokens=8, new_tokens=8, depth_tokens=1024), "g")
    check_fit(stack, StaticBatch(prompt_tokens=8, new_tokens=8, depth_tokens=496), "g")
    for plugin in ("bf16", "sdpa", "kv-cache"):  # dtype, kernel and cache are llama.cpp's own
        with pytest.raises(UserError, match=f"'llamacpp\\+{plugin}' runs on llamacpp"):
            build_stack(f"llamacpp+{plugin}", "cpu")


def test_serving_workloads_are_refused_up_front() -> None:
    from infer_opt.run.plan import check_fit
    from infer_opt.workloads.online.workload import OnlineWorkload
    from infer_opt.workloads.static_batch import StaticBatch

    stack = build_stack("llamacpp", "cpu")
    check_fit(stack, StaticBatch(batch_size=4), "g")  # static batches: one sequence per row
    with pytest.raises(UserError, match="joins rows of different lengths"):
        check_fit(stack, OnlineWorkload(), "g")


def test_missing_environment_skips_with_the_make_target(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFER_OPT_PYTHON_LLAMACPP", str(tmp_path / "nowhere" / "python"))
    environment_reason.cache_clear()
    try:
        reason = build_stack("llamacpp", "cpu").unavailable
    finally:
        environment_reason.cache_clear()
    assert reason is not None and reason.startswith(
        "llamacpp: needs its own environment .venv-llamacpp (make setup-llamacpp)")


def test_gguf_bytes_as_stored(tmp_path: Path) -> None:
    """Quantized tensors count their packed blocks: Q8_0 is 34 bytes per 32 weights (32 int8
    and an f16 scale), Q4_1 20 (16 bytes of nibbles, f16 scale and minimum); F32 4 each."""
    import gguf

    path = tmp_path / "q.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((100, 64), dtype=np.float32)
    w.add_tensor("token_embd.weight", gguf.quants.quantize(emb, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    q = rng.standard_normal((64, 64), dtype=np.float32)
    w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(q, gguf.GGMLQuantizationType.Q4_1),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    w.add_tensor("output.weight", rng.standard_normal((100, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    facts = read_facts(path)
    stored = {x.name: x.stored_bytes for x in facts.weights.weights}
    assert stored == {"token_embd.weight": 100 * 64 // 32 * 34,
                      "blk.0.attn_q.weight": 64 * 64 // 32 * 20,
                      "output_norm.weight": 64 * 4, "output.weight": 100 * 64 * 4}
    # A separate output matrix: the embedding table is read by lookup, one row per token.
    emb_w = next(x for x in facts.weights.weights if x.name == "token_embd.weight")
    assert facts.weights.tied_lm_head is None and emb_w.lookup_rows == 100
    assert (facts.heads, facts.kv_heads, facts.head_dim, facts.vocab) == (4, 2, 16, 100)
    assert facts.describe_types() == "2 F32, 1 Q8_0, 1 Q4_1"
    assert facts.activation_types == ["Q8_0", "Q8_1"]


def test_tiny_model_as_f32_gguf(tmp_path: Path) -> None:
    from infer_opt.core.models import prepare_tiny, tiny_config_dict

    write_llama_gguf(prepare_tiny(), tmp_path / "tiny.gguf")
    facts = read_facts(tmp_path / "tiny.gguf")
    cfg = tiny_config_dict()
    from safetensors.numpy import load_file

    tensors = load_file(str(prepare_tiny() / "model.safetensors"))
    assert "lm_head.weight" not in tensors  # tied: the table is stored once
    params = sum(t.size for t in tensors.values())
    assert facts.file_type == "ALL_F32" and facts.tensor_types == {"F32": 2 + 9 * 2}
    assert sum(x.stored_bytes for x in facts.weights.weights) == params * 4
    assert facts.weights.tied_lm_head == "token_embd.weight"  # no output.weight: tied
    assert (facts.layers, facts.kv_heads, facts.head_dim) == (
        cfg["num_hidden_layers"], cfg["num_key_value_heads"],
        cfg["hidden_size"] // cfg["num_attention_heads"])
    assert facts.kv_values_per_token == 2 * 2 * 2 * 16


def test_permute_rope_pairs_the_halves() -> None:
    # One head of 4 dims (rows), HF order [x0, x1, y0, y1] -> llama.cpp pairs [x0, y0, x1, y1].
    w = np.arange(4, dtype=np.float32)[:, None]
    assert permute_rope(w, 1)[:, 0].tolist() == [0.0, 2.0, 1.0, 3.0]


# --- in .venv-llamacpp ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def engines() -> tuple[Any, Any]:
    return load_engine("llamacpp[kv_cache_type=f32,n_ctx=256]"), load_engine("kv-cache")


@needs_llama_cpp
def test_greedy_tokens_and_logits_equal_torch(engines: tuple[Any, Any]) -> None:
    llama, torch_kv = engines
    prompts = torch.randint(3, 512, (1, 9), generator=torch.Generator().manual_seed(1))
    ours = generate(llama, prompts, 12, HostClock())
    with torch_kv.context():
        ref = generate(torch_kv, prompts, 12, HostClock())
    assert ours.tokens.shape == (1, 12) and torch.equal(ours.tokens, ref.tokens)
    assert len(ours.stamps_s) == 12 and ours.stamps_s == sorted(ours.stamps_s)
    ids = torch.randint(3, 512, (2, 30), generator=torch.Generator().manual_seed(2))
    got, want = llama.score(ids), torch_kv.score(ids)
    assert got.shape == want.shape == (2, 30, 512) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@needs_llama_cpp
def test_static_batch_rows_are_sequences(engines: tuple[Any, Any]) -> None:
    """Three rows decoded together equal each row decoded alone (and torch's batch)."""
    llama, torch_kv = engines
    prompts = torch.randint(3, 512, (3, 7), generator=torch.Generator().manual_seed(4))
    together = generate(llama, prompts, 8, HostClock())
    with torch_kv.context():
        ref = generate(torch_kv, prompts, 8, HostClock())
    assert together.tokens.shape == (3, 8) and torch.equal(together.tokens, ref.tokens)
    alone = generate(llama, prompts[1:2], 8, HostClock())
    assert torch.equal(alone.tokens[0], together.tokens[1])


@needs_llama_cpp
def test_new_request_and_crop_rewind_the_sequence(engines: tuple[Any, Any]) -> None:
    """A new request never sees the previous one's KV; a crop recomputes from the cut."""
    from infer_opt.engines.base import StepInput

    llama, _ = engines
    ids = torch.randint(3, 512, (1, 10), generator=torch.Generator().manual_seed(3))

    def run(seq: Any, tokens: torch.Tensor, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + tokens.shape[1])[None]
        return llama.step(StepInput(tokens, pos, None, seq, tokens.shape[1]))

    first = run(llama.new_cache(1, 64), ids, 0)
    other = run(llama.new_cache(1, 64), ids.flip(1), 0)  # another request in between
    seq = llama.new_cache(1, 64)
    again = run(seq, ids, 0)
    assert torch.equal(first, again) and not torch.equal(first, other)
    seq = llama.crop(seq, 6)
    tail = run(seq, ids[:, 6:], 6)
    assert torch.allclose(tail, again[:, 6:], atol=1e-5)
    with pytest.raises(ValueError, match="does not continue the sequences"):
        run(seq, ids[:, :1], 3)
    with pytest.raises(RuntimeError, match="sequences of one request"):
        stale = seq
        llama.new_cache(1, 64)
        run(stale, ids[:, :1], 10)


@needs_llama_cpp
def test_facts_and_notes(engines: tuple[Any, Any]) -> None:
    llama, _ = engines
    s = llama.settings
    assert (s.dtype, s.attn_implementation) == ("all_f32", "llamacpp")
    assert llama.facts.kv_element_bytes == 4 and llama.facts.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4
    assert llama.facts.weights.tied_lm_head == "token_embd.weight"
    assert any(n.startswith("llama.cpp via llama-cpp-python") and "KV cache K f32 / V f32" in n
               for n in s.notes)


# --- from the main .venv, through the engine's own environment ------------------------------
@pytest.mark.slow  # ~30 s: a worker of the other environment starts, the tiny GGUF, fidelity
def test_suite_runs_llamacpp_in_its_environment(tmp_path: Path) -> None:
    reason = environment_reason("llamacpp", ".venv-llamacpp", ("llama_cpp",))
    if reason is not None:
        pytest.skip(reason)
    rows, samples = run_beside_kv_cache(tmp_path, "llamacpp[kv_cache_type=f32]", batch_size=1,
                                        timeout_s=180)
    row = rows["llamacpp[kv_cache_type=f32]"]
    assert row["status"] == "ok", row["reason"]
    assert row["engine"] == "llamacpp" and row["dtype"] == "all_f32"
    assert float(row["kl_mean"]) < 1e-6 and float(row["top1_agreement_pct"]) == 100.0
    assert float(row["weight_mb"]) > 0 and float(row["decode_tokens_per_s"]) > 0
    assert samples["llamacpp[kv_cache_type=f32]"]["tokens"] == samples["kv-cache"]["tokens"]


@needs_llama_cpp
def test_depth_and_quantized_kv_bytes_by_hand() -> None:
    """q8_0 K / f16 V: bytes by hand (tiny: 128 cached values per token, K and V 64 each;
    q8_0 34 bytes per 32 values, f16 2 per value), and a depth row starts from its context
    (crop back after each run: the same tokens twice). A quantized V needs flash attention,
    whose CPU kernels do not take the tiny model's head dimension of 16 (SmolLM2's is 64)."""
    from types import SimpleNamespace

    from infer_opt.core.models import resolve
    from infer_opt.workloads.static_batch import StaticBatch

    engine = load_engine("llamacpp[type_k=q8_0,n_ctx=256]")
    per_token = 64 * 34 / 32 + 64 * 2
    assert engine.facts.kv_bytes_per_token == per_token
    w = StaticBatch(batch_size=1, prompt_tokens=8, new_tokens=4, depth_tokens=64)
    ctx = SimpleNamespace(cell=SimpleNamespace(seed=0, device="cpu", threads=1),
                          ref=resolve("tiny-random"), settings=engine.settings, engine=engine,
                          tokenizer=None)
    session = w.session(ctx)
    session.warm_up()
    session.run_once(0)
    session.run_once(1)
    assert torch.equal(session.runs[0].tokens, session.runs[1].tokens)
    kv = session.kv
    assert kv.dtype == "K q8_0 / V f16"
    assert kv.used_bytes == round(per_token * (64 + 8 + 4 - 1))
    assert kv.allocated_bytes == round(per_token * 256)


def test_extra_buffer_types_are_off_where_the_cpu_advertises_amx(monkeypatch) -> None:
    from infer_opt.engines.llamacpp import cpu

    assert cpu.advertises_amx("processor: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile amx_int8\n")
    assert not cpu.advertises_amx("processor: 0\nflags\t\t: fpu avx2 avx512f\n")
    monkeypatch.setattr(cpu, "advertises_amx", lambda cpuinfo=None: True)
    use, note = cpu.extra_buffers(None)
    assert use is False and "SIGILL" in note
    assert cpu.extra_buffers(True) == (True, "")
    monkeypatch.setattr(cpu, "advertises_amx", lambda cpuinfo=None: False)
    assert cpu.extra_buffers(None) == (True, "")
