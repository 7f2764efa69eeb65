"""Shared by the torchao plugins: post-load quantization of every nn.Linear with `quantize_`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infer_opt.core.settings import Settings


def tied_lm_head(model: Any) -> bool:
    head = getattr(model, "lm_head", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return head is not None and emb is not None and head.weight is emb.weight


def add_torchao_transform(settings: Settings, by: str, make_config: Callable[[], Any]) -> None:
    def transform(model: Any, s: Settings) -> Any:
        from torchao.quantization import quantize_

        tied = tied_lm_head(model)
        quantize_(model, make_config())  # in place; weights become torchao tensor subclasses
        if tied and not tied_lm_head(model):
            # The lm_head is a Linear too: it gets its own int8 copy and the fp embedding table
            # stays for lookups, so weight bytes include both.
            s.notes.append(f"{by}: lm_head quantized, untied from the embeddings")
        return model

    settings.model_transforms.append(transform)
