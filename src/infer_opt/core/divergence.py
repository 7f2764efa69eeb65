"""How far a variant's next-token distributions are from a reference's: KL, top-1 agreement,
perplexity. Pure tensor math, shared by the fidelity pass (run/fidelity.py) and fidelity at
depth (workloads/depth_fidelity.py)."""

from __future__ import annotations

import math
from typing import Any

import torch


def stable_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over the last dim with the max subtracted first, in float64.

    exp() of fp16 logits above ~11 overflows (fp16 max is 65504); with the max subtracted every
    exponent is <= 0, so the sum is in [1, V] and nothing overflows for finite input.
    """
    x = logits.double()
    shifted = x - x.max(dim=-1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def compare_logits(ref_logits: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
    """KL(ref || variant), top-1 agreement and non-finite count; both [B, N, V]."""
    finite_rows = torch.isfinite(logits).all(dim=-1)  # [B, N]
    logp = stable_log_softmax(ref_logits)
    logq = stable_log_softmax(torch.where(torch.isfinite(logits), logits, 0.0))
    kl = (logp.exp() * (logp - logq)).sum(dim=-1)  # [B, N]
    # Rounding can leave an identical pair at -1e-17; KL is >= 0 by definition.
    kl = kl.clamp_min(0.0).masked_fill(~finite_rows, math.inf)
    agree = (ref_logits.argmax(dim=-1) == logits.argmax(dim=-1)) & finite_rows
    return {
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement_pct": 100.0 * float(agree.double().mean()),
        "logits_nonfinite_count": int((~torch.isfinite(logits)).sum()),
    }


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp(mean NLL) of ids[:, 1:] given logits [1, L, V] predicting the next token."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # stable (max subtracted)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [1, L-1]
    return float(nll.mean().exp())


def g4(x: float) -> float | str:
    # 4 significant digits; exact 0 stays 0 and inf/nan stay visible in the CSV.
    return float(f"{x:.4g}") if math.isfinite(x) else str(x)
