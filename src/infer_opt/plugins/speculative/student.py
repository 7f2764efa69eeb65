"""Speculative decoding drafted by a small model: by default the student `infer-opt distill`
trains from the target (same tokenizer, a few layers), or any model directory given as `path`.

The student runs as its own torch engine (the target's dtype and attention implementation, a
dynamic KV cache), loaded on the first request, outside the timed runs; the row's notes give
its size and load time (its memory is in peak_rss_mb).
"""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.params import Param
from infer_opt.core.settings import Settings
from infer_opt.engines.base import Engine
from infer_opt.plugins.speculative.base import K, Speculative
from infer_opt.plugins.speculative.decoding import Drafter, ModelDrafter

NO_STUDENT = "no distilled student cached; run `infer-opt distill`"


def default_student(model: str) -> str | None:
    """The directory of the student `infer-opt distill` cached for `model`, or None."""
    from infer_opt.plugins.distilled import cached_student_of

    path = cached_student_of(model)
    return None if path is None else str(path)


class SpecStudent(Speculative):
    name = "spec-student"
    summary = "speculative decoding, drafted by a small model (default: the distilled student)"
    params: ClassVar[tuple[Param, ...]] = (
        K, Param("path", str, "", "draft model: a directory or model name (default: the "
                                  "student cached by `infer-opt distill`)"))

    def _path(self, model: str) -> str | None:
        return self.values["path"] or default_student(model)

    def unavailable_reason(self, settings: Settings) -> str | None:
        path = self._path(settings.model)
        if path is None:
            return NO_STUDENT
        from infer_opt.core.models import resolve

        try:
            resolve(path)
        except UserError as exc:
            return f"draft model: {exc}"
        return super().unavailable_reason(settings)

    def make_drafter(self, target: Engine) -> Drafter:
        from infer_opt.core.models import resolve
        from infer_opt.engines.torch.engine import TorchEngine

        path = self._path(target.settings.model)
        assert path is not None  # unavailable_reason said so before anything ran
        s = target.settings
        draft = TorchEngine(resolve(path), Settings(
            device=s.device, engine="torch", dtype=s.dtype,
            attn_implementation=s.attn_implementation, kv_cache="dynamic"))
        vocab: Any = target.config.vocab_size  # type: ignore[attr-defined]
        if draft.config.vocab_size != vocab:
            raise UserError("variant", f"{self.name}: draft {path!r} has vocab_size "
                                       f"{draft.config.vocab_size}, the target {vocab}; the "
                                       "draft must share the target's tokenizer")
        self.notes.append(f"{self.name}: draft {path} ({draft.config.num_hidden_layers} "
                          f"layers, {draft.facts.weight_bytes / 2**20:.0f} MB), loaded in "
                          f"{draft.facts.load_s:.1f} s outside the timed runs")
        return ModelDrafter(draft)
