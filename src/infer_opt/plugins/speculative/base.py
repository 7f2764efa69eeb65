"""Shared by the speculative-decoding plugins (spec-lookup, spec-self, spec-student): what they
declare, and how they install the decode loop of plugins/speculative/decoding.py. A subclass says only
how to build its drafter for a loaded target engine."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric, Plugin
from infer_opt.core.settings import Settings
from infer_opt.core.timing import Clock
from infer_opt.engines.base import BatchRun, Engine
from infer_opt.plugins.speculative.decoding import METRICS, Drafter, speculative_decoder

K = Param("k", int, 4, "draft tokens per verify", minimum=1, maximum=16)


class Speculative(Plugin):
    # Verify and rollback need a KV cache; one sequence per verify.
    needs_kv_cache: ClassVar[tuple[str, ...]] = ("dynamic", "static")
    max_batch_size: ClassVar[int | None] = 1
    params: ClassVar[tuple[Param, ...]] = (K,)
    metrics: ClassVar[tuple[Metric, ...]] = METRICS

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        # Remarks make_drafter has to make (a draft model's size and load time): they go into
        # the notes of every row the stack measures, not only the first workload's.
        self.notes: list[str] = []

    def make_drafter(self, target: Engine) -> Drafter:
        raise NotImplementedError

    def apply(self, settings: Settings) -> None:
        decode = speculative_decoder(self.make_drafter, self.values["k"])

        def decoder(engine: Engine, prompts: torch.Tensor, new_tokens: int,
                    clock: Clock) -> BatchRun:
            run = decode(engine, prompts, new_tokens, clock)
            notes = engine.settings.notes
            notes.extend(n for n in self.notes if n not in notes)
            return run

        # `set` refuses a second decoder in the same stack (two speculative plugins).
        settings.set("decoder", decoder, by=self.name)
