"""Structured pruning of MLP channels: fewer intermediate channels, smaller matmuls.

A Llama MLP is down(act(gate(x)) * up(x)) with gate/up [I, H] and down [H, I]. Intermediate
channel j is row j of gate and up and column j of down; removing it removes 3*H multiply-adds
per token and 3*H weights, so the dense kernels really do less work (unlike zeroed weights).

Importance of channel j in a layer, over calibration tokens t (corpus.py, never the evaluation
text): mean_t |a_tj| * ||down[:, j]||_2, where a = act(gate(x)) * up(x) is the input of down.
It is the size of what the channel adds to the residual stream (as in Wanda's |w| * ||x||,
taken per channel; LLM-Pruner and FLAP score channels from activations the same way).

Every layer keeps the same number of channels, so config.intermediate_size stays one number and
the saved model loads with stock transformers.

Plugin notes (`prune-mlp[fraction=0.25]`, torch engine): in `settings.model_transforms`, call
`prune_mlp_channels(model, fraction, corpus.calibration_ids(model))` before any dtype cast or
quantization; weight bytes and compute drop by about 3*H*removed per layer, so weight_mb and
TPOT both move; report facts["kept_channels"] and facts["removed_fraction"].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from infer_opt.compression.corpus import run_calibration


def channel_importance(model: Any, ids: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """[L, I] importance of every intermediate channel of every layer. ids: [N, S] token ids."""
    layers = list(model.model.layers)
    sums = torch.zeros(len(layers), layers[0].mlp.down_proj.in_features, dtype=torch.float64)
    hooks = []
    for i, layer in enumerate(layers):
        def record(_mod: nn.Module, args: tuple[torch.Tensor, ...], i: int = i) -> None:
            a = args[0]  # [B, S, I], the input of down_proj
            sums[i] += a.abs().double().sum(dim=(0, 1))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(record))
    run_calibration(model, ids, batch, hooks)
    mean_abs = sums / ids.numel()  # [L, I]
    col_norm = torch.stack([layer.mlp.down_proj.weight.detach().double().norm(dim=0)
                            for layer in layers])  # [L, I]
    return mean_abs * col_norm


def _slice_linear(lin: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear holding only the kept rows (dim=0) or input columns (dim=1)."""
    w = lin.weight.detach().index_select(dim, keep).clone()  # [out', in']
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            # Rows keep their bias entries; removing input columns leaves the bias as it was.
            new.bias.copy_(lin.bias.detach().index_select(0, keep) if dim == 0 else lin.bias)
    return new


def slice_mlp(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Keep the intermediate channels `keep` (sorted indices) of one Llama MLP, in place."""
    mlp.gate_proj = _slice_linear(mlp.gate_proj, keep, dim=0)
    mlp.up_proj = _slice_linear(mlp.up_proj, keep, dim=0)
    mlp.down_proj = _slice_linear(mlp.down_proj, keep, dim=1)
    mlp.intermediate_size = keep.numel()


def prune_mlp_channels(model: Any, fraction: float,
                       ids: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """Remove round(fraction * I) least important channels from every MLP, in place.

    ids: [N, S] calibration token ids. fraction 0 keeps every channel in its order: the model
    is unchanged to the bit.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    inter = int(model.config.intermediate_size)
    n_keep = inter - round(fraction * inter)
    scores = channel_importance(model, ids)  # [L, I]
    for layer, s in zip(model.model.layers, scores):
        # Sorted, so surviving channels keep their relative order (fraction 0 is the identity).
        keep = s.topk(n_keep).indices.sort().values
        slice_mlp(layer.mlp, keep)
    model.config.intermediate_size = n_keep
    return model, {"method": "mlp-channels", "removed_fraction": (inter - n_keep) / inter,
                   "kept_channels": n_keep, "original_channels": inter,
                   "calibration_tokens": int(ids.numel())}
