"""Structured pruning of whole decoder layers, ranked by Block Influence.

Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect":
the Block Influence of layer i is BI_i = 1 - mean_t cos(x_t, y_t), where x is the hidden state
entering the layer and y the one leaving it, over calibration tokens t (corpus.py, never the
evaluation text). A layer that barely turns the residual stream has BI near 0 and can go.
Dropping a layer removes all of its compute and weights and 1/L of the KV cache.

Plugin notes (`prune-layers[n=4]`, torch engine): in `settings.model_transforms`, call
`prune_layers(model, n, corpus.calibration_ids(model))`; it renumbers `self_attn.layer_idx`
and sets config.num_hidden_layers, which the KV caches are built from, so any cache the engine
creates after the transform fits. Report facts["dropped"] and facts["block_influence"].

Attention heads are not pruned: with GQA (9 query heads sharing 3 KV heads in SmolLM2) a head
can only go with its whole group of 3 or leave the KV projection untouched, and head counts
must stay uniform across layers for the config; one of 3 groups is too coarse a step to be
worth the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from infer_opt.compression.corpus import run_calibration


def block_influence(model: Any, ids: torch.Tensor, batch: int = 4) -> list[float]:
    """BI of every decoder layer, in layer order. ids: [N, S] token ids."""
    layers = list(model.model.layers)
    cos_sum = torch.zeros(len(layers), dtype=torch.float64)
    inputs: dict[int, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(layers):
        def before(_mod: nn.Module, args: tuple[torch.Tensor, ...], i: int = i) -> None:
            inputs[i] = args[0]  # [B, S, H], hidden state entering layer i

        def after(_mod: nn.Module, _args: Any, out: Any, i: int = i) -> None:
            y = out[0] if isinstance(out, tuple) else out  # [B, S, H]
            cos = torch.nn.functional.cosine_similarity(inputs.pop(i).double(), y.double(), dim=-1)
            cos_sum[i] += cos.sum()  # over B*S tokens
        hooks += [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
    run_calibration(model, ids, batch, hooks)
    return (1.0 - cos_sum / ids.numel()).tolist()


def keep_layers(model: Any, keep: Sequence[int]) -> Any:
    """Keep only the decoder layers `keep` (ascending indices), in place, and renumber them.

    Each attention module indexes the KV cache with its own `layer_idx`, and caches are sized
    from config.num_hidden_layers (config.layer_types too, where the config has it), so all
    three are rewritten to the new numbering.
    """
    n = len(model.model.layers)
    keep = list(keep)
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"keep must be ascending distinct layer indices in [0, {n}), got {keep}")
    model.model.layers = nn.ModuleList([model.model.layers[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_idx
    model.config.num_hidden_layers = len(keep)
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == n:
        model.config.layer_types = [layer_types[i] for i in keep]
    return model


def least_important(scores: Sequence[float], n_drop: int) -> list[int]:
    """Indices of the n_drop smallest scores, ascending (ties: the earlier layer goes first)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:n_drop])


def prune_layers(model: Any, n_drop: int, ids: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """Drop the n_drop layers of lowest Block Influence, in place. ids: [N, S] calibration ids."""
    n = len(model.model.layers)
    if not 0 <= n_drop < n:
        raise ValueError(f"n_drop must be in [0, {n}), got {n_drop}")
    scores = block_influence(model, ids)
    drop = least_important(scores, n_drop)
    keep_layers(model, [i for i in range(n) if i not in drop])
    return model, {"method": "layers", "dropped": drop, "kept_layers": n - n_drop,
                   "original_layers": n, "block_influence": scores}
