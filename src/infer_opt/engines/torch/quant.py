"""The torch engine's weight quantization: `Settings.weights` (core/weights.py) through torchao.

Applied after every other post-load transform (pruning first, then quantization of what is
left), by `quantize_` on each nn.Linear:

    4 bits, weight-only   CPU: torchao's PrototypeInt4WeightOnlyConfig (Int4OpaqueTensor, packed
                          for aten._weight_int4pack_mm_for_cpu); CUDA: Int4WeightOnlyConfig
                          (tinygemm; stack with bf16). Both asymmetric with a float zero point
                          per block: w = (q - 8) * scale + zero. That grid holds any GGUF Q4_1
                          block (w = d * q + m: scale = d, zero = m + 8d), so on SmolLM2, whose
                          fp32 weights are dequantized Q4_1 blocks, round-to-nearest at group 32
                          recovers them (KL ~1e-11).
    8 bits, weight-only   Int8WeightOnlyConfig, symmetric, per output channel (group None) or
                          blocks of `group` along K; it dequantizes in the matmul, so it pays
                          off with bf16 + compile.
    8 bits, int8 activ.   Int8DynamicActivationInt8WeightConfig (per-token activation scales).

The lm_head (tied to the embedding table in SmolLM2) gets torchao int8 weight-only per channel
(`lm_head` int8, the default) or stays in the model's dtype (fp32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infer_opt.core.settings import Settings
from infer_opt.core.weights import WeightQuant, WeightSupport

SUPPORT = (
    WeightSupport(4, groups=(32, 64, 128, 256), symmetric=(False,), lm_head=("int8", "fp32"),
                  how="torchao int4, asymmetric with a float zero point"),
    WeightSupport(8, groups=(16, 32, 64, 128, 256), symmetric=(True,), lm_head=("int8", "fp32"),
                  how="torchao int8 weight-only, symmetric"),
    WeightSupport(8, activations="int8", groups=(), symmetric=(),
                  how="torchao int8 dynamic, per-token activation scales"),
)


def tied_lm_head(model: Any) -> bool:
    head = getattr(model, "lm_head", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return head is not None and emb is not None and head.weight is emb.weight


def _int4_config(device: str, group: int) -> Any:
    if device.startswith("cuda"):
        from torchao.quantization import Int4WeightOnlyConfig

        return Int4WeightOnlyConfig(group_size=group)
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group)


def _int8_weight_only(group: int | None = None) -> Any:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(group_size=group)


def _int8_dynamic() -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig()


def recipe(wq: WeightQuant, device: str) -> tuple[Callable[[], Any], Callable[[], Any] | None,
                                                  str]:
    """(config of the decoder's Linears, config of the lm_head or None to keep it, note)."""
    lm_head = wq.lm_head or "int8"
    head = _int8_weight_only if lm_head == "int8" else None
    if wq.activations == "int8":
        return _int8_dynamic, _int8_dynamic, "torchao int8 dynamic (per-token activation scales)"
    if wq.bits == 4:
        group = wq.group or 32
        kernel = "tinygemm (CUDA)" if device.startswith("cuda") else "_weight_int4pack_mm_for_cpu"
        return (lambda: _int4_config(device, group), head,
                f"torchao, group {group}, asymmetric (float zero point), {kernel}; "
                f"lm_head {lm_head}")
    group8 = wq.group
    # The lm_head took the same config as the body before (per channel, or the same group).
    head8 = (lambda: _int8_weight_only(group8)) if lm_head == "int8" else None
    return (lambda: _int8_weight_only(group8), head8,
            "torchao, symmetric, " + ("per output channel" if group8 is None else f"group {group8}")
            + f"; lm_head {lm_head}")


def quantize_weights(model: Any, settings: Settings) -> Any:
    """`model` with settings.weights applied in place (the stack checked it against SUPPORT)."""
    wq = settings.weights
    if wq is None:
        return model  # torchao is optional: only a weight-quantized variant needs it
    import torch
    from torchao.quantization import quantize_

    by = settings.owners.get("weights", "weights")
    body, head, note = recipe(wq, settings.device)

    def is_body(module: Any, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and fqn != "lm_head"

    def is_head(module: Any, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and fqn == "lm_head"

    tied = tied_lm_head(model)
    quantize_(model, body(), filter_fn=is_body)  # in place; weights become torchao tensors
    if head is not None:
        quantize_(model, head(), filter_fn=is_head)
    settings.notes.append(f"{by}: {note}")
    if tied and not tied_lm_head(model):
        # The lm_head is a Linear too: it gets its own quantized copy and the fp embedding
        # table stays for lookups, so weight bytes include both.
        settings.notes.append(f"{by}: lm_head quantized, untied from the embeddings")
    return model
