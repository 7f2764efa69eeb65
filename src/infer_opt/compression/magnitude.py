"""Unstructured magnitude pruning: zero the smallest |w| of the decoder layers' Linear weights.

Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks", without
the retraining. Done with torch.nn.utils.prune (L1 unstructured) and made permanent with
`prune.remove`, so the model holds plain dense tensors with zeros in them.

Plugin notes (a `prune-magnitude[sparsity=0.5]` transform on the torch engine):
- call `prune_magnitude(model, sparsity)` from `settings.model_transforms`, after `.eval()` and
  before any dtype cast or quantization (the ranking is on the fp32 weights);
- it buys no speed and no memory: the zeros are stored and multiplied like any other value by
  dense kernels. The row measures what the lost weights cost in fidelity, nothing more;
- report `facts["zero_fraction"]` (achieved, over the pruned tensors) beside the target.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

SCOPES = ("layer", "global")


def decoder_linears(model: Any) -> list[tuple[str, nn.Linear]]:
    """(name, module) of every nn.Linear inside the decoder layers, in model order.

    Embeddings and lm_head are left out: in SmolLM2 lm_head *is* the embedding table (tied), so
    zeroing it would also erase parts of the input token vectors; every logit depends on its own
    row alone, so a zeroed entry moves that token's score directly with nothing to average it
    out; and an embedding lookup is a gather, where zeros save nothing. SparseGPT and Wanda
    leave both dense for the same reasons.
    """
    return [(f"layers.{i}.{name}", m)
            for i, layer in enumerate(model.model.layers)
            for name, m in layer.named_modules() if isinstance(m, nn.Linear)]


def prune_magnitude(model: Any, sparsity: float,
                    scope: str = "layer") -> tuple[Any, dict[str, Any]]:
    """Zero the `sparsity` fraction of smallest-|w| decoder Linear weights, in place.

    scope="layer" (default): every weight matrix loses round(sparsity * numel) entries, the
    uniform per-matrix sparsity of Wanda and SparseGPT and the shape sparse kernels want.
    scope="global": one threshold over all of them (round(sparsity * total) entries), as in
    Han et al. Matrices differ in scale, so a global threshold is uneven: at 50 % on SmolLM2 it
    zeroes 97.9 % of layer 0's v_proj and 94.3 % of its o_proj, and 35 % of layer 28's v_proj.
    It lost slightly less there (KL to the fp32 model on eval_text 2.95 vs 3.25 nats), but one
    wiped-out matrix is a cliff the per-matrix default cannot fall off; both are offered.

    Returns (model, facts): facts["zero_fraction"] counts every zero in the pruned tensors,
    including any that were zero before.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    linears = decoder_linears(model)
    with torch.no_grad():
        if scope == "global":
            prune.global_unstructured([(m, "weight") for _, m in linears],
                                      pruning_method=prune.L1Unstructured, amount=sparsity)
        else:
            for _, m in linears:
                prune.l1_unstructured(m, "weight", amount=sparsity)
        for _, m in linears:
            prune.remove(m, "weight")  # weight_orig * weight_mask -> a plain Parameter again
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    total = sum(m.weight.numel() for _, m in linears)
    return model, {"method": "magnitude", "scope": scope, "sparsity_target": sparsity,
                   "zero_fraction": zeros / total, "zeros": zeros, "pruned_params": total,
                   "pruned_tensors": len(linears)}
