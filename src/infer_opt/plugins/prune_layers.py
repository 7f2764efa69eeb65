"""Structured pruning of whole decoder layers (compression/layers.py): the `n` layers whose
output differs least from their input (ShortGPT's Block Influence, on calibration text from
the stdlib's own documentation) are removed, with no retraining. Without `n`, `fraction` of the
model's layers (rounded; 0.125 of SmolLM2's 30 is 4)."""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings


class PruneLayers(Plugin):
    name = "prune-layers"
    summary = "remove the n decoder layers of lowest Block Influence (no retraining)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("n", int, 0, "decoder layers removed (0: use fraction)", minimum=0),
        Param("fraction", float, 0.125, "fraction of the layers removed when n is 0",
              minimum=0.0, maximum=0.9))

    def _drop(self, layers: int) -> int:
        return self.values["n"] or round(self.values["fraction"] * layers)

    def check_model(self, config: dict[str, Any]) -> str | None:
        layers = config.get("num_hidden_layers")
        if not isinstance(layers, int):
            return None  # not a shape this check knows; the transform reads the model itself
        drop = self._drop(layers)
        if drop >= layers:
            return (f"removes {drop} of the model's {layers} decoder layers; at most "
                    f"{layers - 1} can go")
        if drop < 1:
            return (f"fraction={self.values['fraction']:g} of {layers} layers rounds to 0: "
                    "nothing would be pruned (raise fraction or set n)")
        return None

    def apply(self, settings: Settings) -> None:

        def transform(model: Any, s: Settings) -> Any:
            from infer_opt.compression.corpus import calibration_ids
            from infer_opt.compression.layers import prune_layers

            drop = self._drop(len(model.model.layers))
            model, facts = prune_layers(model, drop, calibration_ids(model))
            s.notes.append(f"{self.name}: dropped layers {facts['dropped']} of "
                           f"{facts['original_layers']} (Block Influence, in load_s)")
            return model

        settings.model_transforms.append(transform)
