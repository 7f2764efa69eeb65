"""2:4 semi-structured sparsity: in every 4 consecutive weights along the input dim, 2 are zero.

NVIDIA Ampere and later run a 2:4 matrix in sparse tensor cores at up to 2x the dense matmul
rate and store half the values plus 2-bit indices (Mishra et al. 2021, "Accelerating Sparse
Deep Neural Networks"). torch exposes it as `torch.sparse.to_sparse_semi_structured` (CUDA,
compute capability >= 8.0; cuSPARSELt for fp16/bf16/int8, else CUTLASS).

Two steps, so the mask is testable anywhere:
1. `prune_2_4(model)`: keep the 2 largest |w| of each group of 4, zero the others (dense, any
   device). On CPU this alone is the fidelity cost of 2:4 with no speed change.
2. `to_semi_structured(model)`: CUDA only, replace each masked weight by its compressed form.

Plugin notes (`sparse-2-4`, torch engine): apply both in `settings.model_transforms`, after the
dtype cast (the compressed tensor keeps the dtype it was made from); before that, call
`semi_structured_unavailable(device, dtype)` and skip the row with the string it returns. Only
matmuls with many rows (prefill, large batches) gain: decode at batch 1 is a matrix-vector
product bound by reading the weights, where the saving is the bytes (values halved, plus
metadata), not the tensor-core rate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from infer_opt.compression.magnitude import decoder_linears

GROUP = 4  # weights per group along the input dim
KEEP = 2  # weights kept per group
DTYPES = (torch.float16, torch.bfloat16)
MIN_CAPABILITY = (8, 0)  # Ampere


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Keep-mask of a [out, in] weight: True for the 2 largest |w| of every 4 along `in`.

    Ties are broken by position (topk is deterministic on CPU), so every group keeps exactly
    2, even in a group of equal values.
    """
    out_f, in_f = weight.shape
    if in_f % GROUP:
        raise ValueError(f"input dim {in_f} is not a multiple of {GROUP}")
    groups = weight.detach().abs().reshape(out_f, in_f // GROUP, GROUP)  # [out, in/4, 4]
    top = groups.topk(KEEP, dim=-1).indices  # [out, in/4, 2]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(out_f, in_f)


def prune_2_4(model: Any) -> tuple[Any, dict[str, Any]]:
    """Apply the 2:4 mask to every decoder Linear weight in place (dense zeros, any device).

    Same tensors as magnitude.py (lm_head and embeddings stay dense, see decoder_linears).
    """
    linears = decoder_linears(model)
    with torch.no_grad():
        for _, m in linears:
            m.weight.mul_(mask_2_4(m.weight))
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    total = sum(m.weight.numel() for _, m in linears)
    return model, {"method": "2:4", "zero_fraction": zeros / total, "zeros": zeros,
                   "pruned_params": total, "pruned_tensors": len(linears)}


def semi_structured_unavailable(device: str, dtype: torch.dtype) -> str | None:
    """Why 2:4 sparse kernels cannot run on this device/dtype, or None if they can."""
    if not str(device).startswith("cuda"):
        return f"2:4 sparse kernels need CUDA (device is {device})"
    if not torch.cuda.is_available():
        return "2:4 sparse kernels need CUDA (torch.cuda.is_available() is False)"
    if dtype not in DTYPES:
        return f"2:4 sparse kernels need float16 or bfloat16 weights (dtype is {dtype})"
    cap = torch.cuda.get_device_capability(torch.device(device))
    if cap < MIN_CAPABILITY:
        return (f"2:4 sparse kernels need compute capability >= 8.0 (Ampere); "
                f"this GPU is {cap[0]}.{cap[1]}")
    return None


def _sparse_class() -> type:
    # to_sparse_semi_structured always picks cuSPARSELt unless a global flag forces CUTLASS;
    # choosing the class here avoids flipping that flag for the whole process.
    if torch.backends.cusparselt.is_available():
        return torch.sparse.SparseSemiStructuredTensorCUSPARSELT
    return torch.sparse.SparseSemiStructuredTensorCUTLASS


def to_semi_structured(model: Any) -> tuple[Any, dict[str, Any]]:
    """Replace every (already 2:4-masked) decoder Linear weight by its compressed form. CUDA.

    Raises ValueError when a weight is not 2:4 (call prune_2_4 first) and RuntimeError (from
    torch) when a shape is below the kernel's minimum; check semi_structured_unavailable first.
    """
    cls = _sparse_class()
    linears = decoder_linears(model)
    with torch.no_grad():
        for name, m in linears:
            w = m.weight.detach()
            if not torch.equal(w != 0, (w != 0) & mask_2_4(w)):
                raise ValueError(f"{name}.weight is not 2:4 sparse; run prune_2_4 first")
            m.weight = nn.Parameter(cls.from_dense(w.contiguous()), requires_grad=False)
    return model, {"sparse_backend": cls.BACKEND, "converted_tensors": len(linears)}
