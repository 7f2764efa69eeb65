"""Shared by the torchao plugins: post-load quantization of nn.Linear layers with `quantize_`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infer_opt.core.settings import Settings


def tied_lm_head(model: Any) -> bool:
    head = getattr(model, "lm_head", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return head is not None and emb is not None and head.weight is emb.weight


def add_torchao_transform(settings: Settings, by: str, make_config: Callable[[], Any],
                          lm_head_config: Callable[[], Any] | None | str = "same") -> None:
    """Quantize every nn.Linear with make_config(); the lm_head with it too ("same"), with
    lm_head_config() instead, or not at all (None: it stays in the model's dtype)."""

    def transform(model: Any, s: Settings) -> Any:
        import torch
        from torchao.quantization import quantize_

        def body(module: Any, fqn: str) -> bool:
            return isinstance(module, torch.nn.Linear) and fqn != "lm_head"

        tied = tied_lm_head(model)
        if lm_head_config == "same":
            quantize_(model, make_config())  # in place; weights become torchao tensor subclasses
        else:
            quantize_(model, make_config(), filter_fn=body)
            if lm_head_config is not None:
                quantize_(model, lm_head_config(),
                          filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn == "lm_head")
        if tied and not tied_lm_head(model):
            # The lm_head is a Linear too: it gets its own quantized copy and the fp embedding
            # table stays for lookups, so weight bytes include both.
            s.notes.append(f"{by}: lm_head quantized, untied from the embeddings")
        return model

    settings.model_transforms.append(transform)
