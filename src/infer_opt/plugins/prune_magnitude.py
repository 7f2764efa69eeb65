"""Unstructured magnitude pruning (compression/magnitude.py): the smallest |w| of every decoder
Linear weight set to zero. Dense kernels multiply the zeros like any other value, so this row
shows what the lost weights cost in fidelity, not speed (README, "Pruning")."""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric, Plugin
from infer_opt.core.settings import Settings

ZERO_PCT = Metric("weights_zero_pct", None, "% of the decoder's Linear weights that are zero")


class PruneMagnitude(Plugin):
    name = "prune-magnitude"
    summary = "unstructured L1 magnitude pruning of the decoder Linears (dense zeros)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("sparsity", float, 0.5, "fraction of each weight matrix set to zero",
              minimum=0.0, maximum=0.99),
        Param("scope", str, "layer", "layer: the same fraction per matrix; global: one "
              "threshold over all of them", choices=("layer", "global")))
    metrics = (ZERO_PCT,)

    def apply(self, settings: Settings) -> None:
        sparsity, scope = self.values["sparsity"], self.values["scope"]

        def transform(model: Any, s: Settings) -> Any:
            from infer_opt.compression.magnitude import prune_magnitude

            model, facts = prune_magnitude(model, sparsity, scope)
            s.metrics[ZERO_PCT.name] = 100.0 * facts["zero_fraction"]
            s.notes.append(f"{self.name}: {facts['zeros']} of {facts['pruned_params']} decoder "
                           f"Linear weights zero ({scope}), stored and multiplied densely")
            return model

        settings.model_transforms.append(transform)
