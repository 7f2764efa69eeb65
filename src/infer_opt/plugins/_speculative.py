"""Shared by the speculative-decoding plugins (spec-lookup, spec-self, spec-student): what they
declare, and how they install the decode loop of engines/speculative.py. A subclass says only
how to build its drafter for a loaded target engine."""

from __future__ import annotations

from typing import ClassVar

from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric, Plugin
from infer_opt.core.settings import Settings
from infer_opt.engines.base import Engine
from infer_opt.engines.speculative import METRICS, Drafter, speculative_decoder

K = Param("k", int, 4, "draft tokens per verify", minimum=1, maximum=16)


class Speculative(Plugin):
    # Verify and rollback need a KV cache; one sequence per verify.
    needs_kv_cache: ClassVar[tuple[str, ...]] = ("dynamic", "static")
    max_batch_size: ClassVar[int | None] = 1
    params: ClassVar[tuple[Param, ...]] = (K,)
    metrics: ClassVar[tuple[Metric, ...]] = METRICS

    def make_drafter(self, target: Engine) -> Drafter:
        raise NotImplementedError

    def apply(self, settings: Settings) -> None:
        # `set` refuses a second decoder in the same stack (two speculative plugins).
        settings.set("decoder", speculative_decoder(self.make_drafter, self.values["k"]),
                     by=self.name)
