"""Structured pruning of MLP channels (compression/mlp_channels.py): the least important
intermediate channels of every layer are removed (gate/up rows, down columns), so the dense
matmuls really shrink. Importance: mean |activation| x the down column's norm, on calibration
text from the stdlib's own documentation (never the fidelity text)."""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class PruneMLP(Plugin):
    name = "prune-mlp"
    summary = "remove the least important MLP channels of every layer (smaller dense matmuls)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("fraction", float, 0.25, "fraction of each layer's MLP channels removed",
              minimum=0.0, maximum=0.95),)

    def apply(self, settings: Settings) -> None:
        fraction = self.values["fraction"]

        def transform(model: Any, s: Settings) -> Any:
            from infer_opt.compression.corpus import calibration_ids
            from infer_opt.compression.mlp_channels import prune_mlp_channels

            model, facts = prune_mlp_channels(model, fraction, calibration_ids(model))
            s.notes.append(f"{self.name}: MLP {facts['original_channels']} -> "
                           f"{facts['kept_channels']} channels per layer (importance on "
                           f"{facts['calibration_tokens']} calibration tokens, in load_s)")
            return model

        settings.model_transforms.append(transform)
