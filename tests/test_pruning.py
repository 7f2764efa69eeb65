"""Pruning on the tiny model: exact zero counts, the 2:4 pattern, structured shapes and configs,
pruning 0 as the identity, and pruned models that still generate with a KV cache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from infer_opt.compression import corpus
from infer_opt.compression.layers import block_influence, keep_layers, prune_layers
from infer_opt.compression.magnitude import decoder_linears, prune_magnitude
from infer_opt.compression.mlp_channels import channel_importance, prune_mlp_channels
from infer_opt.compression.semi_structured import (
    mask_2_4,
    prune_2_4,
    semi_structured_unavailable,
    to_semi_structured,
)
from infer_opt.core.models import resolve

PROMPT = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64]])  # [1, 8]


@pytest.fixture()
def tiny() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(resolve("tiny-random").path,
                                                dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(resolve("tiny-random").path)
    return corpus.calibration_ids(model, n_seqs=4, seq_len=64)  # [4, 64]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(PROMPT).logits


def _generates(model: torch.nn.Module) -> None:
    with torch.inference_mode():
        out = model.generate(PROMPT, max_new_tokens=6, do_sample=False, use_cache=True)
    assert out.shape == (1, PROMPT.shape[1] + 6)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_magnitude_per_layer_zeros_exactly_the_stated_fraction(tiny, sparsity) -> None:
    embed_before = tiny.get_input_embeddings().weight.clone()
    _, facts = prune_magnitude(tiny, sparsity)
    linears = decoder_linears(tiny)
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down per layer
    for _, m in linears:  # per tensor: torch's count, round(amount * numel)
        assert int((m.weight == 0).sum()) == round(sparsity * m.weight.numel())
        assert not hasattr(m, "weight_orig")  # prune.remove made it permanent
    total = sum(m.weight.numel() for _, m in linears)
    assert facts["pruned_params"] == total
    assert facts["zeros"] == sum(round(sparsity * m.weight.numel()) for _, m in linears)
    assert facts["zero_fraction"] == facts["zeros"] / total
    assert torch.equal(tiny.get_input_embeddings().weight, embed_before)  # tied lm_head too


def test_magnitude_global_zeros_the_smallest_overall(tiny) -> None:
    weights = torch.cat([m.weight.detach().abs().flatten() for _, m in decoder_linears(tiny)])
    _, facts = prune_magnitude(tiny, 0.5, scope="global")
    n_zero = round(0.5 * weights.numel())
    assert facts["zeros"] == n_zero
    threshold = weights.sort().values[n_zero - 1]  # the largest |w| that went
    for _, m in decoder_linears(tiny):
        kept = m.weight[m.weight != 0].abs()
        assert kept.numel() == 0 or bool((kept >= threshold).all())


def test_magnitude_zero_is_identity(tiny) -> None:
    before = _logits(tiny)
    prune_magnitude(tiny, 0.0)
    assert torch.equal(_logits(tiny), before)


def test_mask_2_4_keeps_two_largest_of_every_four() -> None:
    w = torch.tensor([[0.1, -0.9, 0.5, 0.2, 3.0, 3.0, 3.0, 3.0]])  # [1, 8]: a tie in group 2
    mask = mask_2_4(w)
    assert mask[0, :4].tolist() == [False, True, True, False]
    assert int(mask[0, 4:].sum()) == 2


def test_prune_2_4_pattern_on_every_decoder_weight(tiny) -> None:
    original = {n: m.weight.detach().clone() for n, m in decoder_linears(tiny)}
    _, facts = prune_2_4(tiny)
    for name, m in decoder_linears(tiny):
        groups = m.weight.detach().reshape(m.weight.shape[0], -1, 4)  # [out, in/4, 4]
        assert bool(((groups == 0).sum(dim=-1) == 2).all()), name  # exactly 2 zeros each
        orig = original[name].abs().reshape(groups.shape)
        kept_min = orig.masked_fill(groups == 0, float("inf")).min(dim=-1).values
        dropped_max = orig.masked_fill(groups != 0, -1.0).max(dim=-1).values
        assert bool((kept_min >= dropped_max).all()), name  # the 2 largest |w| stay
    assert facts["zero_fraction"] == 0.5
    _generates(tiny)


def test_semi_structured_says_why_it_cannot_run() -> None:
    assert semi_structured_unavailable("cpu", torch.float16) == \
        "2:4 sparse kernels need CUDA (device is cpu)"
    if not torch.cuda.is_available():
        assert "is_available() is False" in semi_structured_unavailable("cuda", torch.float16)
    else:
        assert "float16 or bfloat16" in semi_structured_unavailable("cuda", torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="2:4 sparse kernels need CUDA")
def test_semi_structured_matches_masked_dense_on_cuda(tiny) -> None:
    reason = semi_structured_unavailable("cuda", torch.float16)
    if reason:
        pytest.skip(reason)
    model = tiny.to("cuda", torch.float16)
    prune_2_4(model)
    ids = torch.randint(3, 512, (2, 64), device="cuda")  # enough rows for the sparse kernel
    with torch.inference_mode():
        dense = model(ids).logits.float()
        to_semi_structured(model)
        sparse = model(ids).logits.float()
    assert torch.allclose(sparse, dense, atol=2e-2, rtol=2e-2)


def test_mlp_channels_shrink_shapes_and_config(tiny, calib, tmp_path) -> None:
    scores = channel_importance(tiny, calib)  # [L, I]
    _, facts = prune_mlp_channels(tiny, 0.25, calib)
    assert facts["kept_channels"] == 96 and facts["removed_fraction"] == 0.25  # 128 - 32
    assert tiny.config.intermediate_size == 96
    for layer, s in zip(tiny.model.layers, scores):
        mlp = layer.mlp
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (96, 64)
        assert mlp.down_proj.weight.shape == (64, 96)
        kept = s.topk(96).indices.sort().values
        dropped = torch.ones_like(s, dtype=torch.bool).index_fill_(0, kept, False)
        assert float(s[kept].min()) >= float(s[dropped].max())  # the weakest went
    _generates(tiny)
    tiny.save_pretrained(tmp_path)  # a uniform config reloads with stock transformers
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert torch.equal(_logits(again), _logits(tiny))


def test_mlp_channels_keep_the_surviving_weights(tiny, calib) -> None:
    gate = tiny.model.layers[0].mlp.gate_proj.weight.detach().clone()  # [I, H]
    scores = channel_importance(tiny, calib)
    prune_mlp_channels(tiny, 0.5, calib)
    kept = scores[0].topk(64).indices.sort().values
    assert torch.equal(tiny.model.layers[0].mlp.gate_proj.weight, gate[kept])


def test_mlp_channels_zero_is_identity(tiny, calib) -> None:
    before = _logits(tiny)
    prune_mlp_channels(tiny, 0.0, calib)
    assert tiny.config.intermediate_size == 128
    assert torch.equal(_logits(tiny), before)


def test_layer_that_does_nothing_has_zero_influence_and_goes(tiny, calib) -> None:
    with torch.no_grad():  # layer 0 adds zero to the residual stream: output == input
        tiny.model.layers[0].self_attn.o_proj.weight.zero_()
        tiny.model.layers[0].mlp.down_proj.weight.zero_()
    bi = block_influence(tiny, calib)
    assert abs(bi[0]) < 1e-12 and bi[1] > 0.01
    before = _logits(tiny)
    _, facts = prune_layers(tiny, 1, calib)
    assert facts["dropped"] == [0] and facts["kept_layers"] == 1
    assert tiny.config.num_hidden_layers == 1 and len(tiny.model.layers) == 1
    assert tiny.model.layers[0].self_attn.layer_idx == 0  # renumbered: the KV cache has 1 layer
    assert torch.equal(_logits(tiny), before)  # adding exact zeros changed nothing
    _generates(tiny)


def test_layers_zero_is_identity(tiny, calib) -> None:
    before = _logits(tiny)
    _, facts = prune_layers(tiny, 0, calib)
    assert facts["dropped"] == [] and tiny.config.num_hidden_layers == 2
    assert torch.equal(_logits(tiny), before)


def test_keep_layers_refuses_bad_indices(tiny) -> None:
    for bad in ([], [1, 0], [0, 0], [2]):
        with pytest.raises(ValueError):
            keep_layers(tiny, bad)


# --- the plugins, on the tiny model through the suite -----------------------------------------

PLUGIN_SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
variants = ["kv-cache", "kv-cache+prune-magnitude[sparsity=0.5]", "kv-cache+prune-2-4",
            "kv-cache+sparse-2-4+bf16", "kv-cache+prune-mlp[fraction=0.25]",
            "kv-cache+prune-layers[n=1]", "kv-cache+distilled", "kv-cache+distilled[trained=false]"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 2
max_repeats = 2
"""


def test_pruning_plugins_rows(tmp_path) -> None:
    import csv

    from infer_opt.run.runner import run_suite
    from infer_opt.run.suite import load_suite

    from .conftest import write_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml", PLUGIN_SUITE)))
    csv_path = run_suite(suite, tmp_path / "r", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    for v in ("kv-cache+prune-magnitude[sparsity=0.5]", "kv-cache+prune-2-4"):
        assert rows[v]["status"] == "ok", rows[v]["reason"]
        assert float(rows[v]["weights_zero_pct"]) == pytest.approx(50.0, abs=0.01)
    assert rows["kv-cache+sparse-2-4+bf16"]["reason"] == (
        "sparse-2-4: 2:4 sparse kernels need CUDA (device is cpu)")
    mlp, layers = rows["kv-cache+prune-mlp[fraction=0.25]"], rows["kv-cache+prune-layers[n=1]"]
    assert "MLP 128 -> 96 channels" in mlp["notes"]
    assert "dropped layers" in layers["notes"]
    # Structured pruning really shrinks what is stored.
    for r in (mlp, layers):
        assert float(r["weight_mb"]) < float(rows["kv-cache"]["weight_mb"])
    assert rows["kv-cache+distilled"]["status"] == "skipped"
    assert rows["kv-cache+distilled"]["reason"] == (
        "distilled: no distilled student cached for tiny-random; build it with "
        "`infer-opt distill`")
    untrained = rows["kv-cache+distilled[trained=false]"]
    assert untrained["status"] == "ok" and "untrained, teacher layers" in untrained["notes"]
    assert untrained["kl_mean"] not in ("", "0")  # half the layers change the answers
