"""The distilled student of the suite's model (compression/distill.py, `infer-opt distill`):
half of the teacher's layers, chosen by Block Influence and trained on the teacher's output
distribution. Fidelity is measured against the teacher's fp32 baseline like any other row.

`distilled[trained=false]` is the same layer-dropped student without training: the difference
between the two rows is what distillation recovered. A trained student that is not built yet
makes the row skipped with the command that builds it (about 7-13 minutes on a 2-core CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Plugin
from infer_opt.core.settings import Settings

NOT_BUILT = "no distilled student cached for {model}; build it with `infer-opt distill`"


def cached_student_of(model: str) -> Path | None:
    """The default recipe's student of `model` when `infer-opt distill` has built it."""
    if not model:
        return None
    from infer_opt.compression.distill import Recipe, cached_student

    return cached_student(Recipe(teacher=model))


class Distilled(Plugin):
    name = "distilled"
    summary = "the distilled half-depth student of the model (trained=false: untrained)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("trained", bool, True, "false: the same layer-dropped student, not trained"),)

    def unavailable_reason(self, settings: Settings) -> str | None:
        if self.values["trained"] and cached_student_of(settings.model) is None:
            return NOT_BUILT.format(model=settings.model or "this model")
        return super().unavailable_reason(settings)

    def apply(self, settings: Settings) -> None:
        student = cached_student_of(settings.model)
        if self.values["trained"]:
            if student is not None:
                settings.set("model_path", str(student), by=self.name)
                settings.notes.append(f"{self.name}: student {student.name}")
            return

        def drop_layers(model: Any, s: Settings) -> Any:
            from infer_opt.compression.distill import Recipe, student_layers
            from infer_opt.compression.layers import keep_layers

            # The trained student's own layers when it exists, so the pair differs only by
            # training; else the default recipe's choice (Block Influence, in load_s).
            keep = (json.loads((student / "distill.json").read_text())["keep_layers"]
                    if student is not None else student_layers(Recipe(), model))
            s.notes.append(f"{self.name}: untrained, teacher layers {keep}")
            return keep_layers(model, keep)

        settings.model_transforms.append(drop_layers)
