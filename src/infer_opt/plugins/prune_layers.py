"""Structured pruning of whole decoder layers (compression/layers.py): the `n` layers whose
output differs least from their input (ShortGPT's Block Influence, on calibration text from
the stdlib's own documentation) are removed, with no retraining."""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class PruneLayers(Plugin):
    name = "prune-layers"
    summary = "remove the n decoder layers of lowest Block Influence (no retraining)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("n", int, 4, "decoder layers removed", minimum=0),)

    def apply(self, settings: Settings) -> None:
        n = self.values["n"]

        def transform(model: Any, s: Settings) -> Any:
            from infer_opt.compression.corpus import calibration_ids
            from infer_opt.compression.layers import prune_layers

            model, facts = prune_layers(model, n, calibration_ids(model))
            s.notes.append(f"{self.name}: dropped layers {facts['dropped']} of "
                           f"{facts['original_layers']} (Block Influence, in load_s)")
            return model

        settings.model_transforms.append(transform)
