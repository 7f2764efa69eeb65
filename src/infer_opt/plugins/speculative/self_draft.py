"""Speculative decoding drafted by the target's own first layers (self-speculative).

The draft is the target cut after its first `layers` decoder layers, then its final norm and
lm_head: an early exit. It shares every weight with the target (nothing is copied or trained),
and keeps its own KV cache for those layers. Zhang et al., "Draft & Verify: Lossless Large
Language Model Acceleration via Self-Speculative Decoding" (2023) skip layers chosen by a search;
cutting the top ones is the simplest such draft, and the row shows what it buys untrained.
Llama-style models only (`model.model.layers`).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from torch import nn

from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.engines.base import Engine
from infer_opt.plugins.speculative.base import K, Speculative
from infer_opt.plugins.speculative.decoding import Drafter, ModelDrafter


def first_layers(model: Any, layers: int) -> Any:
    """A view of a causal LM that runs only its first `layers` decoder layers: new module
    objects around the same submodules (embeddings, layers, norm, lm_head), so no weight is
    copied and the target is untouched. Its config says `layers`, so caches built from it hold
    that many layers."""
    total = len(model.model.layers)
    if not 1 <= layers <= total:
        raise ValueError(f"layers={layers}: the target has {total} decoder layers")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    inner = copy.copy(model.model)  # shares the parameter dicts; gets its own module dict below
    inner._modules = dict(inner._modules)
    inner.layers = nn.ModuleList(list(model.model.layers)[:layers])
    inner.config = config
    outer = copy.copy(model)
    outer._modules = dict(outer._modules)
    outer.model = inner
    outer.config = config
    return outer


class SpecSelf(Speculative):
    name = "spec-self"
    summary = "speculative decoding, drafted by the target's first layers (shared weights)"
    params: ClassVar[tuple[Param, ...]] = (
        K, Param("layers", int, 8, "decoder layers the draft runs (the target's first)",
                 minimum=1))

    def check_model(self, config: dict[str, Any]) -> str | None:
        layers = config.get("num_hidden_layers")
        if isinstance(layers, int) and self.values["layers"] > layers:
            return f"layers={self.values['layers']} but the model has {layers} decoder layers"
        return None

    def make_drafter(self, target: Engine) -> Drafter:
        from infer_opt.engines.torch.engine import TorchEngine

        s = target.settings
        # The draft's own dynamic cache; the stack's step wrappers (compile, ...) stay the
        # target's: they were set up for its shapes.
        draft = Settings(device=s.device, engine="torch", dtype=s.dtype,
                         attn_implementation=s.attn_implementation, kv_cache="dynamic")
        view = first_layers(target.model, self.values["layers"])  # type: ignore[attr-defined]
        return ModelDrafter(TorchEngine.from_model(view, draft))
